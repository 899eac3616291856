package ipamplugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/maclan-cni/maclan/pkg/arp"
	"github.com/maclan-cni/maclan/pkg/ipam/allocator"
	"github.com/maclan-cni/maclan/pkg/ipam/ipamconf"
	"github.com/maclan-cni/maclan/pkg/masterlink"
	"github.com/maclan-cni/maclan/pkg/nldump"
)

// maxConflictsPerSet bounds the conflict records one ADD makes in one range
// set. Each answer costs an address until its record expires, and a device
// that answers every probe (proxy ARP, a broken or hostile host) would
// otherwise take an address per probe, on every ADD and every retry of
// it. Three: a LAN with a few forgotten static hosts in the range still
// works (a retry goes on past the recorded ones), and an answer-all device
// costs at most three addresses per ADD, each for one lifetime.
const maxConflictsPerSet = 3

// newProber returns an ARP prober on master (the default-route interface
// if empty) in the IPAM's namespace, the host's, and the master's name.
func newProber(master string) (*arp.Prober, string, error) {
	h, err := netlinksafe.NewHandle()
	if err != nil {
		return nil, "", fmt.Errorf("conflict detection: netlink handle: %w", err)
	}
	defer h.Close()
	link, err := masterlink.Lookup(h, master, "host")
	if err != nil {
		return nil, "", fmt.Errorf("conflict detection: %w", err)
	}
	name := link.Attrs().Name
	p := &arp.Prober{IfIndex: link.Attrs().Index, MAC: link.Attrs().HardwareAddr}
	addrs, err := nldump.AddrList(h, link, netlink.FAMILY_V4)
	if err != nil {
		return nil, "", fmt.Errorf("conflict detection: addresses of %q: %w", name, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			p.Local = append(p.Local, ip)
		}
	}
	return p, name, nil
}

// macOwner adapts p to conflictCheck.owner: the MAC of the device using
// ip as text, "" if none answered.
func macOwner(p *arp.Prober) func(netip.Addr) (string, error) {
	return func(ip netip.Addr) (string, error) {
		mac, err := p.Owner(ip)
		if err != nil || mac == nil {
			return "", err
		}
		return mac.String(), nil
	}
}

// conflictLifetime is the allocator's lifetime of conflict records: the
// configured one when this network probes; none otherwise, since then no
// ADD would probe an expired record's address again before handing it out.
func conflictLifetime(conf *ipamconf.Conf) time.Duration {
	if !conf.ConflictDetection || conf.LinkInContainer {
		return 0
	}
	return time.Duration(conf.ConflictLifetime)
}

// avoidConflicts probes the addresses this ADD has just taken (see
// conflictCheck.run). On failure the attachment's addresses are released:
// the ADD is all or nothing.
func avoidConflicts(ctx context.Context, conf *ipamconf.Conf, alloc *allocator.Allocator, containerID, ifName string,
	requested []netip.Addr, allocs []allocator.Allocation, log *slog.Logger,
) ([]allocator.Allocation, error) {
	if conf.LinkInContainer {
		log.Warn("conflictDetection: the master is in the container's namespace, out of reach; not probing")
		return allocs, nil
	}
	c := conflictCheck{alloc: alloc, lifetime: time.Duration(conf.ConflictLifetime), log: log}
	p, master, err := newProber(conf.Master)
	if err != nil {
		return nil, c.undo(ctx, containerID, ifName, err)
	}
	c.owner, c.master = macOwner(p), master
	return c.run(ctx, containerID, ifName, requested, allocs)
}

// conflictCheck probes an ADD's fresh IPv4 addresses and records the ones
// that answer.
type conflictCheck struct {
	alloc *allocator.Allocator
	// owner returns the MAC of the device using an address, "" if none.
	owner    func(netip.Addr) (string, error)
	master   string        // for messages
	lifetime time.Duration // of a record, for messages
	log      *slog.Logger
}

// answer is one address found in use during an ADD.
type answer struct {
	ip  netip.Addr
	mac string
}

// run probes the fresh IPv4 addresses of allocs. Each one that answers
// becomes a conflict record and another is taken in its place, until none
// answers. A statically requested address that answers fails the ADD,
// naming the MAC that answered; so does the maxConflictsPerSet-th answer
// in one range set, naming the MACs. On failure the attachment's addresses
// are released (the conflict records stay, at most maxConflictsPerSet per
// set). It ends: every round that is not clean records an answer, and a
// set's answers are capped.
func (c conflictCheck) run(ctx context.Context, containerID, ifName string, requested []netip.Addr,
	allocs []allocator.Allocation,
) (_ []allocator.Allocation, err error) {
	defer func() {
		if err != nil {
			err = c.undo(ctx, containerID, ifName, err)
		}
	}()
	answered := map[int][]answer{} // range set -> addresses found in use by this ADD
	for {
		clean := true
		for _, a := range allocs {
			if !a.Fresh || !a.IP.Is4() {
				continue
			}
			owner, err := c.owner(a.IP)
			if err != nil {
				return nil, fmt.Errorf("conflict detection on %q: %w", c.master, err)
			}
			if owner == "" {
				continue
			}
			clean = false
			if err := c.alloc.MarkConflict(ctx, a.IP, owner, containerID, ifName); err != nil {
				return nil, err
			}
			if slices.Contains(requested, a.IP) {
				return nil, fmt.Errorf("requested address %s is already in use on the LAN by %s (seen on %q): %w",
					a.IP, owner, c.master, allocator.ErrInUseOnLAN)
			}
			answered[a.Set] = append(answered[a.Set], answer{a.IP, owner})
			if len(answered[a.Set]) >= maxConflictsPerSet {
				return nil, c.tooMany(a, answered[a.Set])
			}
			c.log.Warn("address in use on the LAN: recorded as a conflict, taking another",
				"ip", a.IP, "owner", owner, "master", c.master)
		}
		if clean {
			return allocs, nil
		}
		if allocs, err = c.alloc.Allocate(ctx, containerID, ifName, requested); err != nil {
			return nil, err
		}
	}
}

// tooMany is the error of an ADD that met maxConflictsPerSet answers in
// the range set of a.
func (c conflictCheck) tooMany(a allocator.Allocation, answers []answer) error {
	var ips, macs []string
	for _, an := range answers {
		ips = append(ips, an.ip.String())
		if !slices.Contains(macs, an.mac) {
			macs = append(macs, an.mac)
		}
	}
	return fmt.Errorf("conflict detection on %q: %d addresses taken in range set %d (%s) all answered ARP probes, from %s; "+
		"the LAN may have a device answering every probe (proxy ARP, a misconfigured or hostile host); "+
		"giving up after %d conflicts in one ADD (they are recorded, see maclan-ipam ls, and probed again after ipam.conflictLifetime %s): %w",
		c.master, len(answers), a.Set, strings.Join(ips, ", "), strings.Join(macs, ", "), maxConflictsPerSet, c.lifetime, allocator.ErrInUseOnLAN)
}

// undo releases the attachment's addresses after a failed conflict check
// and returns err, with the release's own error joined.
func (c conflictCheck) undo(ctx context.Context, containerID, ifName string, err error) error {
	if _, rerr := c.alloc.Release(ctx, containerID, ifName); rerr != nil {
		err = errors.Join(err, fmt.Errorf("release after failed conflict detection: %w", rerr))
	}
	return err
}
