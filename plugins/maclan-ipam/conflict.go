package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/maclan-cni/maclan/pkg/arp"
	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ipam/allocator"
	"github.com/maclan-cni/maclan/pkg/macvlan"
)

// maxConflictRounds bounds how many times one ADD picks again after finding
// its address in use on the LAN.
const maxConflictRounds = 16

// prober asks the LAN whether an IPv4 address is in use, through the master.
// Leases cover every container; the probe finds what leases cannot know:
// a printer or a forgotten static host on the same subnet.
type prober struct {
	master string
	index  int
	mac    net.HardwareAddr
	local  map[netip.Addr]bool // the host's own addresses on the master
	opts   arp.ProbeOptions
}

func newProber(master string) (*prober, error) {
	h, err := netlinksafe.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("conflict detection: netlink handle: %w", err)
	}
	defer h.Close()
	link, err := macvlan.LookupMaster(h, master, "host")
	if err != nil {
		return nil, fmt.Errorf("conflict detection: %w", err)
	}
	p := &prober{master: link.Attrs().Name, index: link.Attrs().Index, mac: link.Attrs().HardwareAddr, local: map[netip.Addr]bool{}}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("conflict detection: addresses of %q: %w", p.master, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			p.local[ip] = true
		}
	}
	return p, nil
}

// owner returns the MAC of the device using ip, or "" if none answered. The
// host's own addresses on the master count: its probe would not hear itself.
func (p *prober) owner(ip netip.Addr) (string, error) {
	if p.local[ip] {
		return p.mac.String(), nil
	}
	mac, err := arp.Probe(p.index, p.mac, ip, p.opts)
	if err != nil || mac == nil {
		return "", err
	}
	return mac.String(), nil
}

// avoidConflicts probes the addresses this ADD has just taken. Each one
// that answers becomes a conflict record and another is taken in its place,
// until none answers. A statically requested address that answers fails the
// ADD, naming the MAC that answered. On failure the attachment's addresses
// are released: the ADD is all or nothing.
func avoidConflicts(ctx context.Context, conf *config.IPAMConf, alloc *allocator.Allocator, containerID, ifName string,
	requested []netip.Addr, allocs []allocator.Allocation, log *slog.Logger,
) (_ []allocator.Allocation, err error) {
	if conf.LinkInContainer {
		log.Warn("conflictDetection: the master is in the container's namespace, out of reach; not probing")
		return allocs, nil
	}
	defer func() {
		if err != nil {
			if _, rerr := alloc.Release(ctx, containerID, ifName); rerr != nil {
				err = errors.Join(err, fmt.Errorf("release after failed conflict detection: %w", rerr))
			}
		}
	}()
	p, err := newProber(conf.Master)
	if err != nil {
		return nil, err
	}
	for range maxConflictRounds {
		clean := true
		for _, a := range allocs {
			if !a.Fresh || !a.IP.Is4() {
				continue
			}
			owner, err := p.owner(a.IP)
			if err != nil {
				return nil, fmt.Errorf("conflict detection on %q: %w", p.master, err)
			}
			if owner == "" {
				continue
			}
			clean = false
			if err := alloc.MarkConflict(ctx, a.IP, owner, containerID, ifName); err != nil {
				return nil, err
			}
			if slices.Contains(requested, a.IP) {
				return nil, fmt.Errorf("requested address %s is already in use on the LAN by %s (seen on %q)", a.IP, owner, p.master)
			}
			log.Warn("address in use on the LAN: recorded as a conflict, taking another",
				"ip", a.IP, "owner", owner, "master", p.master)
		}
		if clean {
			return allocs, nil
		}
		if allocs, err = alloc.Allocate(ctx, containerID, ifName, requested); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("conflict detection: %d addresses in a row are in use on the LAN; giving up", maxConflictRounds)
}
