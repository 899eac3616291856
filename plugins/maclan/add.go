package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/maclan-cni/maclan/pkg/cnierr"
	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ifconfig"
	"github.com/maclan-cni/maclan/pkg/macvlan"
	"github.com/maclan-cni/maclan/pkg/masterlink"
)

// attachment is one ADD under way: what it was asked, and what it has made
// or taken so far, which is what rollBack gives back if a later step fails.
type attachment struct {
	*command
	conf   *config.NetConf
	mac    net.HardwareAddr // configured, nil for the kernel's
	contNS ns.NetNS
	h      *handles

	lease  ipamLease    // the IPAM ADD, once started
	master netlink.Link // once looked up
	link   netlink.Link // once made by this ADD: rollBack deletes it
	result *current.Result
}

// ipamLease is an ADD's IPAM call: under way (pending), then answered.
type ipamLease struct {
	pending *delegation // started and not yet read
	held    bool        // the IPAM answered with a lease
}

// add attaches the container to the master's LAN and prints the result:
// the link is made in the container, the IPAM's addresses and routes put
// on it, and the host shim given routes to them. A failed step undoes the
// ones before it (rollBack). A repeated ADD of the same attachment is
// answered apart (repeatAdd).
func add(c *command, conf *config.NetConf, mac net.HardwareAddr) error {
	contNS, h, err := openContainer(c.args.Netns, conf.LinkInContainer)
	if err != nil {
		return err
	}
	defer contNS.Close()
	defer h.Close()
	c.tr.step("netns+handles")
	// A repeated ADD finds its interface in place. It is answered before
	// the IPAM is asked anything, so that no roll-back below can give back
	// a lease the running container holds.
	existing, err := existingLink(h, c.args.IfName)
	if err != nil {
		return err
	}
	if existing != nil {
		return repeatAdd(c, conf, h, existing)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ipamTimeout)
	defer cancel()
	a := &attachment{command: c, conf: conf, mac: mac, contNS: contNS, h: h}
	if err := a.attach(ctx); err != nil {
		if errors.Is(err, errStranded) {
			// This thread is still in the container's namespace: an IPAM
			// forked from it would run there. Roll back from another
			// (main's init keeps this goroutine on this thread).
			done := make(chan error)
			go func() { done <- a.rollBack(err) }()
			return <-done
		}
		return a.rollBack(err)
	}
	return nil
}

// attach runs the steps of an ADD in order.
func (a *attachment) attach(ctx context.Context) error {
	// An IPAM that keeps state only runs while the link is made: the two do
	// not depend on each other until the addresses go on the link. It is
	// forked now, from the runtime's namespace, before this thread enters
	// any other (maclan-ipam in process runs now, on this thread:
	// startInProcess). Any other IPAM (dhcp, say) works on the container's
	// interface, so it starts once the link exists.
	if stateOnlyIPAM(a.conf.IPAM.Type) {
		if err := a.startIPAM(ctx); err != nil {
			return err
		}
	}
	if err := a.lookUpMaster(); err != nil {
		return err
	}
	if err := a.createLink(); err != nil {
		return err
	}
	a.result = &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{
			Name:    a.args.IfName,
			Mac:     a.link.Attrs().HardwareAddr.String(),
			Sandbox: a.args.Netns,
		}},
	}
	if a.conf.IPAM.Type == "" {
		return a.upWithoutAddresses()
	}
	for _, step := range []func(context.Context) error{a.addAddresses, a.attachShim, a.printAttached} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// startIPAM forks the IPAM's ADD (see delegation).
func (a *attachment) startIPAM(ctx context.Context) error {
	d, err := startDelegate(ctx, "ADD", a.conf.IPAM.Type, a.args.StdinData)
	if err != nil {
		return fmt.Errorf("IPAM %q ADD: %w", a.conf.IPAM.Type, err)
	}
	a.lease.pending = d
	a.tr.step("ipam start")
	if d.inProcess() {
		a.tr.mark("ipam in process")
	}
	return nil
}

// lookUpMaster finds the master and checks that it can carry traffic and
// the configured MTU.
func (a *attachment) lookUpMaster() error {
	master, err := masterlink.Lookup(a.h.master, a.conf.Master, a.h.where)
	if err != nil {
		return masterError(err)
	}
	if err := masterlink.Ready(master); err != nil {
		// Transient as a rule (a link flap, a cable): the runtime retries.
		return fmt.Errorf("%w: %w", err, cnierr.ErrTryAgain)
	}
	a.master = master
	a.tr.step("master lookup")
	return checkMTU(a.conf.MTU, master)
}

func (a *attachment) createLink() error {
	link, err := macvlan.Create(a.h.master, a.h.cont, netns.NsHandle(a.contNS.Fd()), a.conf.LinkInContainer, macvlan.Spec{
		Master:     a.master,
		Mode:       linkMode(a.conf.Mode),
		MTU:        a.conf.MTU,
		MAC:        a.mac,
		BCQueueLen: a.conf.BCQueueLen,
		IfName:     a.args.IfName,
	})
	if err != nil {
		return err
	}
	a.link = link
	a.tr.step("link create")
	return nil
}

// upWithoutAddresses ends an ADD without IPAM: L2 only, no addresses, just
// an interface that is up.
func (a *attachment) upWithoutAddresses() error {
	if err := a.h.cont.LinkSetUp(a.link); err != nil {
		return fmt.Errorf("set %q up: %w", a.args.IfName, err)
	}
	a.result.DNS = a.conf.DNS
	return a.print(a.result, a.conf.CNIVersion)
}

// addAddresses takes the IPAM's answer (starting the IPAM now if it needs
// the link) and puts it on the link.
func (a *attachment) addAddresses(ctx context.Context) error {
	if a.lease.pending == nil {
		if err := a.startIPAM(ctx); err != nil {
			return err
		}
	}
	ipamResult, err := ipamAdd(a.conf.IPAM.Type, a.lease.pending)
	a.lease = ipamLease{held: err == nil}
	if err != nil {
		return err
	}
	a.tr.step("ipam wait")
	a.result.IPs = ipamResult.IPs
	a.result.Routes = ipamResult.Routes
	a.result.DNS = mergeDNS(a.conf.DNS, ipamResult.DNS)
	for _, ipc := range a.result.IPs {
		ipc.Interface = current.Int(0)
	}
	if a.conf.MACFromIP && a.conf.MAC == "" {
		if err := setMACFromIP(a.h.cont, a.link, a.result, a.log); err != nil {
			return err
		}
	}
	return inNetNS(a.contNS, func() error {
		a.tr.step("configure: enter netns")
		return ifconfig.Configure(a.h.cont, a.link, a.result, ifconfig.Options{
			DADTimeout:    dadTimeout,
			DADRetrans:    dadRetrans,
			Announcements: announcements,
			Step:          a.tr.step,
		})
	})
}

// attachShim routes the host to the container's addresses. It is the last
// step that can fail: Attach undoes itself if it fails, and nothing after
// it can.
func (a *attachment) attachShim(context.Context) error {
	if !a.conf.ShimEnabled() {
		return nil
	}
	sh, err := newShim(a.h.master, a.conf, a.master.Attrs().Name, a.args.StdinData)
	if err != nil {
		return err
	}
	return sh.Attach(attachmentID(a.args), resultIPs(a.result))
}

func (a *attachment) printAttached(context.Context) error {
	a.log.Info("attached", "master", a.master.Attrs().Name, "mode", a.conf.Mode,
		"mac", a.result.Interfaces[0].Mac, "ips", resultIPs(a.result))
	defer a.tr.step("print result")
	return a.print(a.result, a.conf.CNIVersion)
}

// rollBack undoes what this ADD made or took, newest first: the link, then
// the lease. It returns err; its own failures are logged.
func (a *attachment) rollBack(err error) error {
	if a.link != nil {
		if _, derr := macvlan.Delete(a.h.cont, a.args.IfName); derr != nil {
			a.log.Error("removing the link after a failed ADD failed too", "error", derr)
		}
	}
	a.releaseLease(err)
	return err
}

// releaseLease gives back the lease of a failed ADD, if the IPAM gave one.
func (a *attachment) releaseLease(err error) {
	if a.conf.IPAM.Type == "" {
		return
	}
	if a.lease.pending != nil { // the ADD failed before its result was read
		_, werr := a.lease.pending.wait()
		a.lease = ipamLease{held: werr == nil}
	}
	if !a.lease.held {
		return // the IPAM ADD failed or never ran: nothing to release
	}
	if errors.Is(err, macvlan.ErrNameTaken) {
		// A concurrent ADD of this very attachment made the interface: the
		// IPAM answered both with one lease, which that interface holds.
		// Releasing it would free an address in use.
		a.log.Warn("not releasing the lease: another ADD of this attachment holds it", "error", err)
		return
	}
	if derr := ipamCall("DEL", a.conf.IPAM.Type, a.args.StdinData); derr != nil {
		a.log.Error("releasing the addresses after a failed ADD failed too", "ipam", a.conf.IPAM.Type, "error", derr)
	}
}

// setMACFromIP gives the link the MAC derived from the first IPv4 address
// of the result (the link is still down, so the change is free). The MAC is
// derived anew from the lease at every ADD, so it can never outlive it.
func setMACFromIP(h netlinksafe.Handle, link netlink.Link, result *current.Result, log *slog.Logger) error {
	for _, ipc := range result.IPs {
		ip, ok := netip.AddrFromSlice(ipc.Address.IP.To4())
		if !ok {
			continue
		}
		mac := macvlan.MACFromIPv4(ip)
		if err := h.LinkSetHardwareAddr(link, mac); err != nil {
			return fmt.Errorf("macFromIP: set MAC %s on %q: %w", mac, link.Attrs().Name, err)
		}
		result.Interfaces[0].Mac = mac.String()
		link.Attrs().HardwareAddr = mac // the announcements carry it
		return nil
	}
	log.Warn("macFromIP: no IPv4 address in the IPAM result; keeping the kernel's random MAC")
	return nil
}

// linkMode maps the configuration's mode to the link's. The configuration
// was validated (config.ParseNetConf), and its empty mode is bridge.
func linkMode(name string) macvlan.Mode {
	switch name {
	case config.ModePrivate:
		return macvlan.Private
	case config.ModeVEPA:
		return macvlan.VEPA
	case config.ModePassthru:
		return macvlan.Passthru
	}
	return macvlan.Bridge
}

// checkMTU refuses an MTU above the master's, which the kernel would refuse
// with a bare EINVAL: the configuration asks what this master cannot give.
func checkMTU(mtu int, master netlink.Link) error {
	if mtu > master.Attrs().MTU {
		return fmt.Errorf("field \"mtu\": %d is above the MTU %d of master %q: %w",
			mtu, master.Attrs().MTU, master.Attrs().Name, config.ErrInvalid)
	}
	return nil
}

// masterError marks a missing master as a configuration error: the
// configuration names an interface this host does not have.
func masterError(err error) error {
	if errors.Is(err, masterlink.ErrNotFound) {
		return fmt.Errorf("%w: %w", err, config.ErrInvalid)
	}
	return err
}
