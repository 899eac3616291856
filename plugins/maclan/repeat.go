package main

import (
	"context"
	"errors"
	"fmt"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ifconfig"
	"github.com/maclan-cni/maclan/pkg/macvlan"
	"github.com/maclan-cni/maclan/pkg/masterlink"
)

// existingLink returns the container's interface named ifName, or nil when
// there is none.
func existingLink(h *handles, ifName string) (netlink.Link, error) {
	link, err := h.cont.LinkByName(ifName)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up %q in the container: %w", ifName, err)
	}
	return link, nil
}

// repeatAdd answers an ADD for an interface (link) that the container
// already has: a runtime retrying an ADD whose answer it lost (a time-out,
// a restart), or "cnitool add" run twice. When the interface is maclan's own (a macvlan of
// the configured master, in the configured mode, holding the addresses and
// routes the IPAM gives for this attachment), the answer is the result of
// the first ADD: one interface, one lease. Anything else is an error naming
// what was found, and the container is left as it was.
//
// Nothing here releases a lease on failure: an IPAM asked again for the
// same attachment answers with the lease the running container holds
// (maclan-ipam and host-local do), and giving that back would let the next
// ADD hand its address out a second time.
func repeatAdd(c *command, conf *config.NetConf, h *handles, link netlink.Link) error {
	args := c.args
	master, err := masterlink.Lookup(h.master, conf.Master, h.where)
	if err != nil {
		return masterError(err)
	}
	want := macvlan.Expect{Master: master.Attrs().Name, MasterIndex: master.Attrs().Index, Mode: linkMode(conf.Mode), MTU: conf.MTU}
	if err := macvlan.Verify(h.cont, h.master, args.IfName, want); err != nil {
		return fmt.Errorf("the container already has an interface %q that is not this network's (%w): left as it was",
			args.IfName, err)
	}
	result := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: args.IfName, Mac: link.Attrs().HardwareAddr.String(), Sandbox: args.Netns}},
		DNS:        conf.DNS,
	}
	if err := repeatIPAM(c, conf, h, result); err != nil {
		return err
	}
	if conf.ShimEnabled() {
		sh, err := newShim(h.master, conf, master.Attrs().Name, args.StdinData)
		if err != nil {
			return err
		}
		if err := sh.Attach(attachmentID(args), resultIPs(result)); err != nil {
			return err
		}
	}
	c.log.Info("already attached: answering with the existing interface", "master", master.Attrs().Name,
		"mac", result.Interfaces[0].Mac, "ips", resultIPs(result))
	return c.print(result, conf.CNIVersion)
}

// repeatIPAM asks the IPAM again for the attachment's lease and checks
// that the interface holds it; result gets the IPAM's answer.
func repeatIPAM(c *command, conf *config.NetConf, h *handles, result *current.Result) error {
	if conf.IPAM.Type == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), ipamTimeout)
	defer cancel()
	d, err := startDelegate(ctx, "ADD", conf.IPAM.Type, c.args.StdinData)
	if err != nil {
		return fmt.Errorf("IPAM %q ADD: %w", conf.IPAM.Type, err)
	}
	ipamResult, err := ipamAdd(conf.IPAM.Type, d)
	if err != nil {
		return err
	}
	if err := ifconfig.Verify(h.cont, c.args.IfName, ipamResult.IPs, ipamResult.Routes); err != nil {
		return fmt.Errorf("the container already has an interface %q, but it does not hold what IPAM %q gives "+
			"this attachment (%w): left as it was", c.args.IfName, conf.IPAM.Type, err)
	}
	result.IPs, result.Routes = ipamResult.IPs, ipamResult.Routes
	result.DNS = mergeDNS(conf.DNS, ipamResult.DNS)
	for _, ipc := range result.IPs {
		ipc.Interface = current.Int(0)
	}
	return nil
}
