package ipamplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/maclan-cni/maclan/pkg/cnierr"
	"github.com/maclan-cni/maclan/pkg/ipam/allocator"
	"github.com/maclan-cni/maclan/pkg/ipam/ipamconf"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// lockTimeout is how long a call waits for the store lock.
func lockTimeout(conf *ipamconf.Conf) time.Duration { return time.Duration(conf.LockTimeout) }

// closeStore closes st and joins a close error into *err.
func closeStore(st store.Store, err *error) {
	if cerr := st.Close(); cerr != nil {
		*err = errors.Join(*err, fmt.Errorf("close store: %w", cerr))
	}
}

func newAllocator(conf *ipamconf.Conf, st store.Store, log *slog.Logger) *allocator.Allocator {
	return lifecycle{}.allocator(conf, st, log)
}

// add allocates an address from every range set (or returns those the
// attachment already holds) and builds the result.
func add(ctx context.Context, conf *ipamconf.Conf, st store.Store, lc lifecycle, containerID, ifName string, log *slog.Logger) (*types100.Result, error) {
	var requested []netip.Addr
	for _, r := range conf.Requested {
		requested = append(requested, r.IP)
	}
	// Read before allocating, so that an unreadable file fails the ADD
	// with no lease taken.
	var dns *types.DNS
	if conf.ResolvConf != "" {
		var err error
		if dns, err = readResolvConf(conf.ResolvConf); err != nil {
			return nil, fmt.Errorf("ipam.resolvConf: %w", err)
		}
	}
	alloc := lc.allocator(conf, st, log)
	allocs, err := alloc.Allocate(ctx, containerID, ifName, requested)
	if err != nil {
		return nil, err
	}
	if conf.ConflictDetection {
		if allocs, err = avoidConflicts(ctx, conf, alloc, containerID, ifName, requested, allocs, log); err != nil {
			return nil, err
		}
	}
	res := &types100.Result{CNIVersion: types100.ImplementedSpecVersion, Routes: conf.Routes}
	for _, a := range allocs {
		res.IPs = append(res.IPs, &types100.IPConfig{
			Address: net.IPNet{IP: a.IP.AsSlice(), Mask: net.CIDRMask(a.Range.Subnet.Bits(), a.IP.BitLen())},
			Gateway: a.Range.Gateway.AsSlice(),
		})
	}
	if dns != nil {
		res.DNS = *dns
	}
	return res, nil
}

// del releases the attachment's addresses. An unknown attachment, or one
// already released, is success.
func del(ctx context.Context, conf *ipamconf.Conf, st store.Store, lc lifecycle, containerID, ifName string, log *slog.Logger) error {
	_, err := allocator.New(st, nil, lc.options(conf, log)).Release(ctx, containerID, ifName)
	return err
}

// check verifies the attachment's leases and, when the runtime passes a
// prevResult, that it lists exactly those addresses within our ranges.
func check(ctx context.Context, conf *ipamconf.Conf, st store.Store, stdin []byte, containerID, ifName string, log *slog.Logger) error {
	allocs, err := newAllocator(conf, st, log).Check(ctx, containerID, ifName)
	if err != nil {
		return err
	}
	prev, err := prevResultIPs(stdin)
	if err != nil || prev == nil {
		return err
	}
	var errs []error
	for _, a := range allocs {
		if !prev[a.IP] {
			errs = append(errs, fmt.Errorf("check %s/%s: lease %s is not in prevResult", containerID, ifName, a.IP))
		}
	}
	for ip := range prev {
		inRange, leased := false, false
		for _, set := range conf.Ranges {
			inRange = inRange || set.RangeFor(ip) >= 0
		}
		for _, a := range allocs {
			leased = leased || a.IP == ip
		}
		if inRange && !leased {
			errs = append(errs, fmt.Errorf("check %s/%s: prevResult address %s has no lease", containerID, ifName, ip))
		}
	}
	return errors.Join(errs...)
}

// prevResultIPs returns the addresses of the prevResult in stdin, or nil if
// there is none.
func prevResultIPs(stdin []byte) (map[netip.Addr]bool, error) {
	var nc types.NetConf
	if err := json.Unmarshal(stdin, &nc); err != nil {
		return nil, fmt.Errorf("decode prevResult: %w", err)
	}
	if nc.RawPrevResult == nil {
		return nil, nil
	}
	if err := version.ParsePrevResult(&nc); err != nil {
		return nil, fmt.Errorf("parse prevResult: %w", err)
	}
	res, err := types100.NewResultFromResult(nc.PrevResult)
	if err != nil {
		return nil, fmt.Errorf("convert prevResult: %w", err)
	}
	ips := map[netip.Addr]bool{}
	for _, c := range res.IPs {
		if a, ok := netip.AddrFromSlice(c.Address.IP); ok {
			ips[a.Unmap()] = true
		}
	}
	return ips, nil
}

// gc releases the leases of every attachment the runtime no longer lists.
// Without a list it releases nothing: an absent list is not an empty one.
func gc(ctx context.Context, conf *ipamconf.Conf, st store.Store, lc lifecycle, log *slog.Logger) error {
	if conf.Attachments == nil {
		log.Warn("GC: the config has no cni.dev/valid-attachments (nor cni.dev/attachments); releasing nothing")
		return nil
	}
	valid := make([]allocator.Attachment, 0, len(conf.Attachments))
	for _, a := range conf.Attachments {
		valid = append(valid, allocator.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	opts := lc.options(conf, log)
	if conf.Store.Type == "etcd" {
		if lc.idErr != nil || lc.id.Host == "" {
			log.Warn("GC: cannot tell this host; on a shared (etcd) store it releases nothing", "err", lc.idErr)
			return nil
		}
		opts.GCHost = lc.id.Host // only this host's containers: the runtime lists only those
	}
	gone, err := allocator.New(st, nil, opts).GC(ctx, valid)
	if len(gone) > 0 {
		log.Info("GC released leases of attachments the runtime no longer lists", "leases", len(gone))
	}
	return err
}

// status fails with cnierr.ErrNotAvailable (code 50) when an ADD could not
// succeed: the store cannot be written, or a range set has no address left.
func status(ctx context.Context, conf *ipamconf.Conf, st pluginStore, log *slog.Logger) error {
	if err := st.CheckWritable(); err != nil {
		return notAvailable(err)
	}
	err := newAllocator(conf, st, log).Available(ctx)
	if errors.Is(err, allocator.ErrExhausted) {
		return notAvailable(err)
	}
	return err
}

func notAvailable(err error) error { return fmt.Errorf("%w: %w", cnierr.ErrNotAvailable, err) }
