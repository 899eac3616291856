package ipamplugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/allocator"
	"github.com/maclan-cni/maclan/pkg/ipam/holder"
	"github.com/maclan-cni/maclan/pkg/ipam/ipamconf"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/safefs"
)

// Lease lifecycle (docs/ipam.md, "Lease lifecycle"): the IPAM keeps its
// leases true by itself, without an orchestrator.

// lifecycle is what one call knows of who takes a lease: the host, the
// boot and the runtime's namespace and workload.
type lifecycle struct {
	id    holder.Identity
	idErr error
	netns string
	// prelude runs under the lock of every allocation (sweepPrelude).
	prelude func(context.Context)
}

func newLifecycle(netns string) lifecycle {
	id, err := holder.Current()
	return lifecycle{id: id, idErr: err, netns: netns}
}

// options are the allocator options of conf for this call.
func (lc lifecycle) options(conf *ipamconf.Conf, log *slog.Logger) allocator.Options {
	return allocator.Options{
		Exclude:          conf.ExcludedPrefixes(),
		Log:              log,
		ConflictLifetime: conflictLifetime(conf),
		Holder: store.Lease{
			Host: lc.id.Host, Boot: lc.id.Boot, Netns: lc.netns,
			Workload: conf.Workload, WorkloadUID: conf.WorkloadUID,
		},
		// Hosts sharing an etcd store spread out (allocator/spread.go).
		Spread:     spreadID(conf, lc.id),
		StickyFor:  time.Duration(conf.StickyFor),
		StaleAfter: time.Duration(conf.StaleAfter),
		NetnsGone:  holder.NetnsGone,
		Prelude:    lc.prelude,
	}
}

// spreadID is what spreads a host's allocations on a store that many hosts
// share (etcd): its identity. The directory store is one host's: none.
func spreadID(conf *ipamconf.Conf, id holder.Identity) string {
	if conf.Store.Type != "etcd" {
		return ""
	}
	return id.Host
}

// allocator is the allocator of conf for this call.
func (lc lifecycle) allocator(conf *ipamconf.Conf, st store.Store, log *slog.Logger) *allocator.Allocator {
	return allocator.New(st, conf.Ranges, lc.options(conf, log))
}

// bootMarker is the file that records the boot whose sweep of network
// name is done, beside the store's local state (the data directory, or the
// etcd store's lock directory): each host keeps its own.
func bootMarker(conf *ipamconf.Conf) string {
	return filepath.Join(conf.Store.Dir, "."+conf.Name+".boot")
}

// sweepAfterBoot runs once per boot and network on a host, in the first
// call of any verb: it gives back every lease this host took in an earlier
// boot, whose containers cannot be alive. Failures are logged, never
// returned: the call itself does not depend on the sweep. An ADD runs it
// under its allocation's lock instead (sweepPrelude).
func (lc lifecycle) sweepAfterBoot(ctx context.Context, conf *ipamconf.Conf, st store.Store, log *slog.Logger) {
	if !lc.sweepDue(conf, log) {
		return
	}
	err := store.WithLock(ctx, st, func() error {
		lc.sweepLocked(ctx, conf, st, log)
		return nil
	})
	if err != nil {
		log.Warn("releasing the leases of earlier boots failed; the next call tries again", "err", err)
	}
}

// sweepPrelude is the sweep after a reboot as an allocator.Options.Prelude
// for an ADD, or nil if this boot's sweep of the network is done: the first
// ADDs of a boot come in a burst (a node's pods restarting), and each
// would otherwise take the store's lock twice, once to find the sweep done
// by another. It runs once per call, whatever the number of allocations
// (conflict detection allocates again).
//
// Not for an etcd store, whose failed request spoils the lock section it
// happens in (its Unlock drops the section's reservations): there the
// sweep keeps a section of its own (sweepAfterBoot), so that its failure
// never fails an ADD.
func (lc lifecycle) sweepPrelude(conf *ipamconf.Conf, st store.Store, log *slog.Logger) func(context.Context) {
	if !lc.sweepDue(conf, log) {
		return nil
	}
	ran := false
	return func(ctx context.Context) {
		if !ran {
			ran = true
			lc.sweepLocked(ctx, conf, st, log)
		}
	}
}

// sweepDue reports whether this boot's sweep of the network may still be
// due: it is wanted, it can be done, and the marker does not say it is
// done. Only sweepLocked, under the lock, can tell for sure.
func (lc lifecycle) sweepDue(conf *ipamconf.Conf, log *slog.Logger) bool {
	if !conf.Reclaim() {
		return false
	}
	if lc.idErr != nil {
		log.Warn("cannot tell this host's boot; leases of earlier boots are kept", "err", lc.idErr)
		return false
	}
	if conf.Store.Type == "etcd" && !lc.id.MachineID {
		// Hosts share the store: a hostname may not be unique, and the
		// sweep would take other hosts' leases for this one's.
		log.Warn("no /etc/machine-id: on a shared (etcd) store leases of earlier boots are kept; give the host a machine-id")
		return false
	}
	return readSmall(bootMarker(conf)) != lc.id.Boot
}

// sweepLocked sweeps, the store's lock held, unless the marker now says
// this boot's sweep is done: the calls that found it due together queue
// for the lock, and only the first of them sweeps. The marker is written
// before the lock is given up, for the next in the queue.
func (lc lifecycle) sweepLocked(ctx context.Context, conf *ipamconf.Conf, st store.Store, log *slog.Logger) {
	marker := bootMarker(conf)
	if readSmall(marker) == lc.id.Boot {
		return
	}
	opts := lc.options(conf, log)
	opts.BootTime = holder.BootTime() // read here, once per boot: no other call needs it
	gone, err := allocator.New(st, nil, opts).SweepEarlierBootsLocked(ctx)
	if err != nil {
		log.Warn("releasing the leases of earlier boots failed; the next call tries again", "err", err)
		return
	}
	log.Info("released the leases this host took in an earlier boot", "leases", len(gone))
	if err := writeSmall(marker, lc.id.Boot); err != nil {
		log.Warn("cannot record the sweep after boot; the next call sweeps again", "file", marker, "err", err)
	}
}

// readSmall returns the first line of a small regular file, without
// following a symbolic link ("" if anything is wrong).
func readSmall(path string) string {
	b, err := safefs.ReadFile(path, 256)
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return line
}

// writeSmall replaces path with a file holding s: written beside it,
// synced and renamed over it, so that a reader never sees half of it.
func writeSmall(path, s string) (err error) {
	if err := safefs.CheckDir(filepath.Dir(path)); err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s.tmp%d", path, os.Getpid())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp) // best effort: the write already failed
		}
	}()
	_, err = f.WriteString(s + "\n")
	err = errors.Join(err, f.Sync(), f.Close())
	if err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// gc --stale: what the IPAM does by itself before an ADD fails for want of
// an address, run by hand.
func (c *cli) gc(args []string) (err error) {
	fs := c.flags("gc")
	sf := c.storeFlags(fs)
	network := fs.String("network", "", "network (default: all)")
	stale := fs.Bool("stale", false, "release the leases of vanished namespaces")
	after := fs.Duration("stale-after", ipamconf.DefaultStaleAfter, "only leases older than this")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if !*stale {
		return usageError("gc needs --stale (the runtime's GC verb releases by attachment list)")
	}
	names, err := sf.networks(*network)
	if err != nil {
		return err
	}
	lc := newLifecycle("")
	if lc.idErr != nil {
		return lc.idErr
	}
	for _, name := range names {
		if err := c.gcStale(sf, lc, name, *after); err != nil {
			return fmt.Errorf("network %s: %w", name, err)
		}
	}
	return nil
}

func (c *cli) gcStale(sf *storeFlags, lc lifecycle, network string, after time.Duration) (err error) {
	st, err := sf.open(network)
	if err != nil {
		return err
	}
	defer closeStore(st, &err)
	conf := &ipamconf.Conf{Name: network, StaleAfter: ipamconf.Duration(after)}
	gone, err := allocator.New(st, nil, lc.options(conf, c.log)).ReclaimStale(context.Background())
	for _, l := range gone {
		if _, werr := fmt.Fprintf(c.stdout, "released %s\t%s\t%s\t%s\n", network, l.IP, cell(l.ContainerID), cell(l.Netns)); werr != nil {
			return werr
		}
	}
	return err
}
