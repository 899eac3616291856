// Command maclan is a CNI plugin that puts a container straight onto the LAN
// of a host interface (the master) through a macvlan link, and delegates its
// addresses to any IPAM plugin.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/maclan-cni/maclan/pkg/cmdwrap"
	"github.com/maclan-cni/maclan/pkg/cnierr"
	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ifconfig"
	"github.com/maclan-cni/maclan/pkg/logging"
	"github.com/maclan-cni/maclan/pkg/macvlan"
	"github.com/maclan-cni/maclan/pkg/masterlink"
	"github.com/maclan-cni/maclan/pkg/shim"
)

// buildVersion is set at link time (-X main.buildVersion=...).
var buildVersion = "dev"

const (
	// ipamTimeout bounds one delegated IPAM call. IPAMs have time-outs of
	// their own (maclan-ipam's store lock answers code 11 long before this);
	// this only keeps a wedged foreign IPAM from hanging the runtime.
	ipamTimeout = 2 * time.Minute
	// dadTimeout bounds the wait for IPv6 duplicate address detection.
	dadTimeout = 10 * time.Second
	// dadRetrans is how long DAD waits for an answer to its solicitation
	// (the kernel's default is 1s, after a random delay of up to 1s).
	dadRetrans = 20 * time.Millisecond
	// announcements per address after ADD.
	announcements = 3
	// shimLockTimeout bounds the wait for the host shim's lock.
	shimLockTimeout = 10 * time.Second
)

func init() {
	// Namespace switches (ns.Do) act on one OS thread; keep main on it.
	runtime.LockOSThread()
}

func main() {
	if runByHand() {
		os.Exit(cliMain(os.Args[1:], os.Stdout, os.Stderr))
	}
	tr := newTracer(os.Getenv("MACLAN_TRACE") == "1", os.Stderr)
	w := wrapper(tr)
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    w.Wrap("ADD", traced(cmdAdd, tr)),
		Del:    w.Wrap("DEL", traced(cmdDel, tr)),
		Check:  w.Wrap("CHECK", traced(cmdCheck, tr)),
		GC:     w.Wrap("GC", traced(cmdGC, tr)),
		Status: w.Wrap("STATUS", traced(cmdStatus, tr)),
	}, version.All, "CNI maclan plugin "+buildVersion)
}

// wrapper is maclan's frame around each command (package cmdwrap): the
// logger that "logFile" and "logLevel" ask for, CNI_NETNS on the line of a
// failed call, and with logLevel debug the time of each phase. tr times the
// steps (MACLAN_TRACE=1 prints them).
func wrapper(tr *tracer) cmdwrap.Options {
	return cmdwrap.Options{
		Plugin:  "maclan",
		LogConf: readLogConf,
		Begin:   func() { tr.step("skel") },
		Started: func(log *slog.Logger) {
			tr.step("logger")
			if log.Enabled(context.Background(), slog.LevelDebug) {
				tr.collectPhases() // logLevel debug: the call's line carries the phases
			}
		},
		NetnsOnFailure: true,
		Attrs:          func() []any { return []any{tr.phaseAttr()} },
	}
}

// readLogConf reads where to log from the configuration; one that does not
// decode is reported by the command itself.
func readLogConf(stdin []byte) (logging.Options, string) {
	conf, err := config.DecodeNetConf(stdin)
	if err != nil {
		return logging.Options{}, ""
	}
	return logging.Options{File: conf.LogFile, Level: conf.LogLevel}, conf.Name
}

// traced hands a command the tracer.
func traced(fn func(*skel.CmdArgs, *slog.Logger, *tracer) error, tr *tracer) cmdwrap.Func {
	return func(args *skel.CmdArgs, log *slog.Logger) error { return fn(args, log, tr) }
}

// handles opens netlink handles on the container namespace and on the
// namespace where the master lives (the plugin's own, or the container's
// with linkInContainer).
type handles struct {
	cont, master netlinksafe.Handle
	where        string
}

func openHandles(contNS ns.NetNS, linkInContainer bool) (*handles, error) {
	cont, err := netlinksafe.NewHandleAt(netns.NsHandle(contNS.Fd()))
	if err != nil {
		return nil, fmt.Errorf("netlink handle in container netns %q: %w", contNS.Path(), err)
	}
	if linkInContainer {
		return &handles{cont: cont, master: cont, where: "container"}, nil
	}
	host, err := netlinksafe.NewHandle()
	if err != nil {
		cont.Close()
		return nil, fmt.Errorf("netlink handle in host netns: %w", err)
	}
	return &handles{cont: cont, master: host, where: "host"}, nil
}

func (h *handles) Close() {
	if h.master.Handle != h.cont.Handle {
		h.master.Close()
	}
	h.cont.Close()
}

// openContainer opens the container's namespace and the netlink handles
// (see openHandles); the caller closes both.
func openContainer(path string, linkInContainer bool) (ns.NetNS, *handles, error) {
	contNS, err := openNetNS(path)
	if err != nil {
		return nil, nil, err
	}
	h, err := openHandles(contNS, linkInContainer)
	if err != nil {
		contNS.Close()
		return nil, nil, err
	}
	return contNS, h, nil
}

func openNetNS(path string) (ns.NetNS, error) {
	n, err := ns.GetNS(path)
	if err != nil {
		return nil, fmt.Errorf("open container netns %q: %w", path, err)
	}
	return n, nil
}

func cmdAdd(args *skel.CmdArgs, log *slog.Logger, tr *tracer) (err error) {
	conf, err := config.ParseNetConf(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	var mac net.HardwareAddr
	if conf.MAC != "" {
		if mac, err = config.ParseMAC(conf.MAC); err != nil {
			return fmt.Errorf("mac: %w: %w", err, config.ErrInvalid)
		}
	}
	tr.step("parse")
	contNS, h, err := openContainer(args.Netns, conf.LinkInContainer)
	if err != nil {
		return err
	}
	defer contNS.Close()
	defer h.Close()
	tr.step("netns+handles")
	// A repeated ADD finds its interface in place. It is answered before
	// the IPAM is asked anything, so that no roll-back below can give back
	// a lease the running container holds.
	var existing netlink.Link
	if existing, err = existingLink(h, args.IfName); err != nil {
		return err
	}
	if existing != nil {
		return repeatAdd(args, conf, h, log)
	}
	// An IPAM that keeps state only runs while the link is made: the two do
	// not depend on each other until the addresses go on the link. It is
	// forked now, from the runtime's namespace, before this thread enters
	// any other. Any other IPAM (dhcp, say) works on the container's
	// interface, so it starts once the link exists.
	var pending *delegation
	ipamHeld := false
	ipamCtx, cancelIPAM := context.WithTimeout(context.Background(), ipamTimeout)
	defer cancelIPAM()
	startIPAM := func() error {
		var err error
		if pending, err = startDelegate(ipamCtx, "ADD", conf.IPAM.Type, args.StdinData); err != nil {
			return fmt.Errorf("IPAM %q ADD: %w", conf.IPAM.Type, err)
		}
		tr.step("ipam start")
		return nil
	}
	if conf.IPAM.Type != "" {
		defer func() {
			if err == nil {
				return
			}
			if pending != nil { // the ADD failed before its result was read
				_, werr := pending.wait()
				ipamHeld = werr == nil
			}
			if !ipamHeld {
				return // the IPAM ADD failed or never ran: nothing to release
			}
			if errors.Is(err, macvlan.ErrNameTaken) {
				// A concurrent ADD of this very attachment made the
				// interface: the IPAM answered both with one lease, which
				// that interface holds. Releasing it would free an
				// address in use.
				log.Warn("not releasing the lease: another ADD of this attachment holds it", "error", err)
				return
			}
			if derr := ipamDel(conf.IPAM.Type, args.StdinData); derr != nil {
				log.Error("releasing the addresses after a failed ADD failed too", "ipam", conf.IPAM.Type, "error", derr)
			}
		}()
		if stateOnlyIPAM(conf.IPAM.Type) {
			if err = startIPAM(); err != nil {
				return err
			}
		}
	}
	master, err := masterlink.Lookup(h.master, conf.Master, h.where)
	if err != nil {
		return masterError(err)
	}
	if err = masterlink.Ready(master); err != nil {
		// Transient as a rule (a link flap, a cable): the runtime retries.
		return fmt.Errorf("%w: %w", err, cnierr.ErrTryAgain)
	}
	tr.step("master lookup")
	if err = checkMTU(conf.MTU, master); err != nil {
		return err
	}
	link, err := macvlan.Create(h.master, h.cont, netns.NsHandle(contNS.Fd()), conf.LinkInContainer, macvlan.Spec{
		Master:     master,
		Mode:       linkMode(conf.Mode),
		MTU:        conf.MTU,
		MAC:        mac,
		BCQueueLen: conf.BCQueueLen,
		IfName:     args.IfName,
	})
	if err != nil {
		return err
	}
	tr.step("link create+rename")
	defer func() {
		if err == nil {
			return
		}
		if _, derr := macvlan.Delete(h.cont, args.IfName); derr != nil {
			log.Error("removing the link after a failed ADD failed too", "error", derr)
		}
	}()

	result := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{
			Name:    args.IfName,
			Mac:     link.Attrs().HardwareAddr.String(),
			Sandbox: args.Netns,
		}},
	}

	if conf.IPAM.Type == "" {
		// L2 only: no addresses, just an interface that is up.
		if err = h.cont.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %q up: %w", args.IfName, err)
		}
		result.DNS = conf.DNS
		return types.PrintResult(result, conf.CNIVersion)
	}

	if pending == nil {
		if err = startIPAM(); err != nil {
			return err
		}
	}
	var ipamResult *current.Result
	ipamResult, err = ipamAdd(conf.IPAM.Type, pending)
	pending, ipamHeld = nil, err == nil
	if err != nil {
		return err
	}
	tr.step("ipam wait")
	result.IPs = ipamResult.IPs
	result.Routes = ipamResult.Routes
	result.DNS = mergeDNS(conf.DNS, ipamResult.DNS)
	for _, ipc := range result.IPs {
		ipc.Interface = current.Int(0)
	}
	if conf.MACFromIP && conf.MAC == "" {
		if err = setMACFromIP(h.cont, link, result, log); err != nil {
			return err
		}
	}

	err = contNS.Do(func(ns.NetNS) error {
		return ifconfig.Configure(args.IfName, result, ifconfig.Options{
			DADTimeout:    dadTimeout,
			DADRetrans:    dadRetrans,
			Announcements: announcements,
			Step:          tr.step,
		})
	})
	if err != nil {
		return err
	}
	if conf.ShimEnabled() {
		// Last step: Attach undoes itself if it fails, and nothing after it can.
		var sh *shim.Shim
		if sh, err = newShim(h.master, conf, master.Attrs().Name, args.StdinData); err != nil {
			return err
		}
		if err = sh.Attach(attachmentID(args), resultIPs(result)); err != nil {
			return err
		}
	}
	log.Info("attached", "master", master.Attrs().Name, "mode", conf.Mode,
		"mac", result.Interfaces[0].Mac, "ips", resultIPs(result))
	defer tr.step("print result")
	return types.PrintResult(result, conf.CNIVersion)
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
		return nil
	}
	log.Warn("macFromIP: no IPv4 address in the IPAM result; keeping the kernel's random MAC")
	return nil
}

func attachmentID(args *skel.CmdArgs) string {
	// ':' can appear in neither a container ID nor an interface name.
	return args.ContainerID + ":" + args.IfName
}

func resultIPs(r *current.Result) []netip.Addr {
	var ips []netip.Addr
	for _, ipc := range r.IPs {
		if ip, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			ips = append(ips, ip.Unmap())
		}
	}
	return ips
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

// ipamAdd waits for the IPAM ADD started by startDelegate and converts its
// result.
func ipamAdd(plugin string, d *delegation) (*current.Result, error) {
	r, err := d.result()
	if err != nil {
		return nil, fmt.Errorf("IPAM %q ADD: %w", plugin, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, fmt.Errorf("IPAM %q ADD: convert result: %w", plugin, err)
	}
	if len(res.IPs) == 0 {
		return nil, fmt.Errorf("IPAM %q ADD returned no IP address", plugin)
	}
	return res, nil
}

func ipamDel(plugin string, stdin []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), ipamTimeout)
	defer cancel()
	if _, err := delegate(ctx, "DEL", plugin, stdin); err != nil {
		return fmt.Errorf("IPAM %q DEL: %w", plugin, err)
	}
	return nil
}

// cmdDel removes the link and releases the addresses. It succeeds when there
// is nothing left to do: no prior ADD, a second DEL, a netns or master that
// has gone. It still releases the lease in all those cases.
func cmdDel(args *skel.CmdArgs, log *slog.Logger, tr *tracer) error {
	conf, err := config.DecodeNetConf(args.StdinData)
	if err != nil {
		return err
	}
	tr.step("parse")
	var errs []error
	// A state-only IPAM releases while the kernel tears the link down (20 ms
	// and more of RCU waits): neither depends on the other. It is forked now,
	// from the runtime's namespace, before this thread enters any other. Any
	// other IPAM may need the interface to release (dhcp sends its
	// DHCPRELEASE from it), so it finishes first, as with the reference.
	var pending *delegation
	if conf.IPAM.Type != "" {
		ctx, cancel := context.WithTimeout(context.Background(), ipamTimeout)
		defer cancel()
		if pending, err = startDelegate(ctx, "DEL", conf.IPAM.Type, args.StdinData); err != nil {
			errs = append(errs, fmt.Errorf("IPAM %q DEL: %w", conf.IPAM.Type, err))
		}
		tr.step("ipam start")
	}
	waitIPAM := func() {
		if pending == nil {
			return
		}
		if _, err := pending.wait(); err != nil {
			errs = append(errs, fmt.Errorf("IPAM %q DEL: %w", conf.IPAM.Type, err))
		}
		pending = nil
		tr.step("ipam wait")
	}
	if !stateOnlyIPAM(conf.IPAM.Type) {
		waitIPAM()
	}
	if err := deleteLink(args.Netns, args.IfName, log); err != nil {
		errs = append(errs, err)
	}
	tr.step("link delete")
	if conf.ShimEnabled() {
		if err := detachShim(conf, attachmentID(args)); err != nil {
			errs = append(errs, err)
		}
	}
	waitIPAM()
	return errors.Join(errs...)
}

// stateOnlyIPAM reports whether an IPAM plugin only keeps state (leases in
// files or a database) and never touches the container's interface, so that
// it can run while the link is made or torn down. Unknown IPAMs are assumed
// to need the interface.
func stateOnlyIPAM(plugin string) bool {
	switch plugin {
	case "maclan-ipam", "host-local", "static":
		return true
	}
	return false
}

func deleteLink(netnsPath, ifName string, log *slog.Logger) error {
	if netnsPath == "" {
		return nil // the runtime has no namespace left (after a reboot, say)
	}
	contNS, err := ns.GetNS(netnsPath)
	if err != nil {
		var gone ns.NSPathNotExistErr
		var notNS ns.NSPathNotNSErr
		if errors.As(err, &gone) || errors.As(err, &notNS) {
			return nil // the namespace, and the link with it, is gone
		}
		return fmt.Errorf("open container netns %q: %w", netnsPath, err)
	}
	defer contNS.Close()
	h, err := netlinksafe.NewHandleAt(netns.NsHandle(contNS.Fd()))
	if err != nil {
		return fmt.Errorf("netlink handle in container netns %q: %w", netnsPath, err)
	}
	defer h.Close()
	// An ADD killed between creating the link and renaming it leaves it
	// under its temporary name.
	if _, err := macvlan.Delete(h, macvlan.TempName(ifName)); err != nil {
		log.Warn("interface left in place", "netns", netnsPath, "error", err)
	}
	if _, err := macvlan.Delete(h, ifName); err != nil {
		// Not ours (another plugin's link of that name): leave it, and do
		// not fail DEL for ever over it.
		log.Warn("interface left in place", "netns", netnsPath, "error", err)
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs, _ *slog.Logger, _ *tracer) error {
	conf, err := config.ParseNetConf(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	if conf.RawPrevResult == nil {
		return fmt.Errorf("CHECK needs a prevResult: %w", config.ErrInvalid)
	}
	if err := version.ParsePrevResult(&conf.NetConf); err != nil {
		return fmt.Errorf("parse prevResult: %w: %w", err, config.ErrInvalid)
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return fmt.Errorf("convert prevResult: %w: %w", err, config.ErrInvalid)
	}
	var intf *current.Interface
	for _, i := range prev.Interfaces {
		if i.Name == args.IfName && i.Sandbox == args.Netns {
			intf = i
		}
	}
	if intf == nil {
		return fmt.Errorf("prevResult has no interface %q in sandbox %q", args.IfName, args.Netns)
	}

	if conf.IPAM.Type != "" {
		ctx, cancel := context.WithTimeout(context.Background(), ipamTimeout)
		defer cancel()
		if _, err := delegate(ctx, "CHECK", conf.IPAM.Type, args.StdinData); err != nil {
			return fmt.Errorf("IPAM %q CHECK: %w", conf.IPAM.Type, err)
		}
	}

	contNS, h, err := openContainer(args.Netns, conf.LinkInContainer)
	if err != nil {
		return err
	}
	defer contNS.Close()
	defer h.Close()
	master, err := masterlink.Lookup(h.master, conf.Master, h.where)
	if err != nil {
		return err
	}
	want := macvlan.Expect{Master: master.Attrs().Name, MasterIndex: master.Attrs().Index, Mode: linkMode(conf.Mode), MTU: conf.MTU}
	if intf.Mac != "" {
		if want.MAC, err = net.ParseMAC(intf.Mac); err != nil {
			return fmt.Errorf("prevResult interface %q: MAC %q: %w", intf.Name, intf.Mac, err)
		}
	}
	if err := macvlan.Verify(h.cont, h.master, args.IfName, want); err != nil {
		return err
	}
	if conf.ShimEnabled() && !conf.LinkInContainer {
		sh, err := newShim(h.master, conf, master.Attrs().Name, nil)
		if err != nil {
			return err
		}
		if err := sh.Verify(resultIPs(prev)); err != nil {
			return err
		}
	}
	return ifconfig.Verify(h.cont, args.IfName, prev.IPs, prev.Routes)
}

// cmdStatus reports whether an ADD could succeed now: the master exists and
// is up, and the IPAM is ready (SPEC.md, "STATUS").
func cmdStatus(args *skel.CmdArgs, _ *slog.Logger, _ *tracer) error {
	conf, err := config.DecodeNetConf(args.StdinData)
	if err != nil {
		return err
	}
	// With linkInContainer the master lives in a namespace STATUS is not
	// given; only the IPAM can be asked.
	if !conf.LinkInContainer {
		if err := masterReady(conf.Master); err != nil {
			return fmt.Errorf("%w: %w", cnierr.ErrNotAvailable, err)
		}
	}
	if conf.IPAM.Type != "" {
		ctx, cancel := context.WithTimeout(context.Background(), ipamTimeout)
		defer cancel()
		if _, err := delegate(ctx, "STATUS", conf.IPAM.Type, args.StdinData); err != nil {
			return fmt.Errorf("IPAM %q STATUS: %w", conf.IPAM.Type, err)
		}
	}
	return nil
}

func masterReady(name string) error {
	h, err := netlinksafe.NewHandle()
	if err != nil {
		return fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	master, err := masterlink.Lookup(h, name, "host")
	if err != nil {
		return err
	}
	return masterlink.Ready(master)
}

// cmdGC forwards garbage collection to the IPAM (SPEC.md, "GC"): the links
// themselves die with their container namespaces.
func cmdGC(args *skel.CmdArgs, _ *slog.Logger, _ *tracer) error {
	conf, err := config.DecodeNetConf(args.StdinData)
	if err != nil {
		return err
	}
	if conf.IPAM.Type == "" {
		return nil
	}
	stdin, err := withShimAttachments(args.StdinData, conf)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), ipamTimeout)
	defer cancel()
	if _, err := delegate(ctx, "GC", conf.IPAM.Type, stdin); err != nil {
		return fmt.Errorf("IPAM %q GC: %w", conf.IPAM.Type, err)
	}
	return nil
}
