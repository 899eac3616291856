package allocator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// Lease lifecycle (docs/ipam.md, "Lease lifecycle"): every lease records
// the host, boot, namespace and workload it was taken for, so that leases
// of containers gone without a DEL are given back by the IPAM itself, and a
// returning workload can get its address back.

// StickyPrefix starts the container ID of the attachment under which a
// workload's released addresses are held for it (StickyID).
const StickyPrefix = "maclan-sticky-"

// StickyID is the attachment's container ID under which the addresses of
// workload's interface ifName are held between two of its containers. A
// hash, so that any workload name makes a valid container ID, and one
// lookup finds the hold.
func StickyID(workload string) string {
	sum := sha256.Sum256([]byte(workload))
	return StickyPrefix + hex.EncodeToString(sum[:12])
}

// restamp brings the lifecycle fields of the leases the attachment already
// holds up to date, when the store can (store.Restamper): a container
// re-created under the same ID after a reboot, or in a new namespace, gets
// its old lease back from Allocate, and that lease must say it is of this
// boot and this namespace, or the sweep after a reboot or the stale rule
// would take it from the living container. Leases of another host are left
// alone. Called with the lock held; a failure is logged: the lease stays
// the container's either way.
func (a *Allocator) restamp(ctx context.Context, held []store.Lease) {
	me := a.opts.Holder
	rs, ok := a.st.(store.Restamper)
	if !ok || me.Host == "" || me.Boot == "" {
		return
	}
	for _, l := range held {
		if l.Conflict != "" || l.IsSticky() || (l.Host != "" && l.Host != me.Host) {
			continue
		}
		if l.Host == me.Host && l.Boot == me.Boot && (me.Netns == "" || l.Netns == me.Netns) {
			continue
		}
		n := l
		n.Host, n.Boot = me.Host, me.Boot
		if me.Netns != "" {
			n.Netns = me.Netns
		}
		if me.Workload != "" {
			n.Workload, n.WorkloadUID = me.Workload, me.WorkloadUID
		}
		if err := rs.Restamp(ctx, n); err != nil {
			a.log.Warn("cannot bring a held lease up to date", "ip", l.IP, "err", err)
		}
	}
}

// releaseRead releases l.IP while its record is still l as it was read,
// where the store is shared by hosts that do not share its lock (a
// ConditionalReleaser: etcd), and at once otherwise (every user of a
// directory store takes its lock, so what was read under it still holds).
func (a *Allocator) releaseRead(ctx context.Context, l store.Lease) error {
	if c, ok := a.st.(store.ConditionalReleaser); ok {
		return c.ReleaseIf(ctx, l)
	}
	return a.st.Release(ctx, l.IP)
}

// newLease is the lease of ip for the attachment, stamped with the
// holder's identity.
func (a *Allocator) newLease(ip netip.Addr, containerID, ifName string) store.Lease {
	l := a.opts.Holder
	l.IP, l.ContainerID, l.IfName, l.Created = ip, containerID, ifName, a.opts.Now()
	l.Conflict, l.Released = "", time.Time{}
	return l
}

// stickyExpired reports whether a sticky hold has outlived StickyFor.
func (a *Allocator) stickyExpired(l store.Lease) bool {
	return l.IsSticky() && a.opts.Now().Sub(l.Released) >= a.opts.StickyFor
}

// takeSticky gives the attachment the address its workload holds in set i,
// if it holds one. Called with the lock held.
func (a *Allocator) takeSticky(ctx context.Context, i int, containerID, ifName string) (netip.Addr, bool, error) {
	w := a.opts.Holder.Workload
	if w == "" || a.opts.StickyFor <= 0 {
		return netip.Addr{}, false, nil
	}
	holds, err := a.st.GetByID(ctx, StickyID(w), ifName)
	if err != nil {
		return netip.Addr{}, false, err
	}
	for _, h := range holds {
		if a.sets[i].RangeFor(h.IP) < 0 || h.Workload != w {
			continue // another set's, or a hash collision
		}
		if err := a.releaseRead(ctx, h); errors.Is(err, store.ErrReserved) || errors.Is(err, store.ErrNotFound) {
			continue // another host took or gave up the hold since it was read
		} else if err != nil {
			return netip.Addr{}, false, fmt.Errorf("take back %s held for %s: %w", h.IP, w, err)
		}
		if err := a.st.Reserve(ctx, a.newLease(h.IP, containerID, ifName)); err != nil {
			return netip.Addr{}, false, fmt.Errorf("take back %s held for %s: %w", h.IP, w, err)
		}
		a.log.Info("workload back: it gets the address it held", "workload", w, "ip", h.IP)
		return h.IP, true, nil
	}
	return netip.Addr{}, false, nil
}

// giveBack ends the leases of an attachment whose container is gone: with
// StickyFor, a lease of a named workload becomes a hold for that workload;
// any other is released. Called with the lock held.
func (a *Allocator) giveBack(ctx context.Context, containerID, ifName string) ([]netip.Addr, error) {
	var held []store.Lease
	if a.opts.StickyFor > 0 {
		var err error
		if held, err = a.st.GetByID(ctx, containerID, ifName); err != nil && !errors.Is(err, store.ErrCorrupt) {
			return nil, err
		}
	}
	ips, err := a.st.ReleaseByID(ctx, containerID, ifName)
	if err != nil {
		return ips, err
	}
	for _, l := range held {
		if l.Workload != "" && l.Conflict == "" && !l.IsSticky() && slices.Contains(ips, l.IP) {
			a.hold(ctx, l)
		}
	}
	return ips, nil
}

// SweepEarlierBoots gives back every lease that this host took in an
// earlier boot: no container of an earlier boot is alive. Leases of other
// hosts, conflict records, sticky holds and leases written before the
// fields existed (no boot recorded) are kept.
func (a *Allocator) SweepEarlierBoots(ctx context.Context) (gone []store.Lease, err error) {
	if a.opts.Holder.Host == "" || a.opts.Holder.Boot == "" {
		return nil, errors.New("sweep: the host's identity is unknown")
	}
	err = store.WithLock(ctx, a.st, func() error {
		gone, err = a.SweepEarlierBootsLocked(ctx)
		return err
	})
	return gone, err
}

// SweepEarlierBootsLocked is SweepEarlierBoots for a caller that holds the
// store's lock.
func (a *Allocator) SweepEarlierBootsLocked(ctx context.Context) (gone []store.Lease, err error) {
	me := a.opts.Holder
	if me.Host == "" || me.Boot == "" {
		return nil, errors.New("sweep: the host's identity is unknown")
	}
	err = a.reclaim(ctx, true, func(l store.Lease) (bool, error) {
		if !a.opts.BootTime.IsZero() && l.Created.After(a.opts.BootTime) {
			if l.Host == me.Host && l.Boot != "" && l.Boot != me.Boot {
				a.log.Warn("a lease of 'this host' made in another boot after this boot began: two hosts share one identity (a cloned machine-id?); keeping it",
					"ip", l.IP, "container", l.ContainerID, "boot", l.Boot)
			}
			return false, nil
		}
		return l.Host == me.Host && l.Boot != "" && l.Boot != me.Boot, nil
	}, &gone)
	return gone, err
}

// ReclaimStale gives back the leases of this host and boot whose network
// namespace has gone and that are older than StaleAfter. A lease recorded
// without a namespace, or whose namespace exists or cannot be examined, is
// kept.
func (a *Allocator) ReclaimStale(ctx context.Context) (gone []store.Lease, err error) {
	err = store.WithLock(ctx, a.st, func() error {
		return a.reclaimStaleLocked(ctx, true, &gone)
	})
	return gone, err
}

func (a *Allocator) reclaimStaleLocked(ctx context.Context, hold bool, gone *[]store.Lease) error {
	me := a.opts.Holder
	if a.opts.NetnsGone == nil || a.opts.StaleAfter <= 0 || me.Host == "" || me.Boot == "" {
		return nil
	}
	return a.reclaim(ctx, hold, func(l store.Lease) (bool, error) {
		if l.Host != me.Host || l.Boot != me.Boot || l.Netns == "" || a.opts.Now().Sub(l.Created) < a.opts.StaleAfter {
			return false, nil
		}
		isGone, err := a.opts.NetnsGone(l.Netns)
		if err != nil {
			a.log.Warn("cannot tell whether a lease's namespace exists; keeping the lease", "ip", l.IP, "netns", l.Netns, "err", err)
			return false, nil
		}
		return isGone, nil
	}, gone)
}

// reclaim gives back the attachments of every container lease that dead
// says is dead, and appends their leases to gone (with hold, a named
// workload's addresses become sticky holds, as giveBack makes them): all at once through a
// BulkReleaser when the store is one (the sweep after a reboot may give
// back thousands), else one by one; with StickyFor, a named workload's
// released addresses become holds for it (as giveBack does).
func (a *Allocator) reclaim(ctx context.Context, hold bool, dead func(store.Lease) (bool, error), gone *[]store.Lease) error {
	leases, err := a.st.List(ctx)
	if err != nil {
		if !errors.Is(err, store.ErrCorrupt) {
			return err
		}
		a.log.Warn("damaged leases are kept; run fsck", "err", err)
	}
	verdict := map[Attachment]bool{}
	var ids []Attachment
	var theirs []store.Lease
	for _, l := range leases {
		if l.Conflict != "" || l.IsSticky() {
			continue
		}
		at := Attachment{ContainerID: l.ContainerID, IfName: l.IfName}
		isDead, seen := verdict[at]
		if !seen {
			if isDead, err = dead(l); err != nil {
				isDead = false
			}
			verdict[at] = isDead
			if isDead {
				ids = append(ids, at)
			}
		}
		if isDead {
			theirs = append(theirs, l)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	bulk, ok := a.st.(store.BulkReleaser)
	if !ok {
		var errs []error
		for _, at := range ids {
			release := a.giveBack
			if !hold {
				release = a.st.ReleaseByID
			}
			if _, err := release(ctx, at.ContainerID, at.IfName); err != nil {
				errs = append(errs, err)
			}
		}
		*gone = append(*gone, theirs...)
		return errors.Join(errs...)
	}
	released, err := bulk.ReleaseLeases(ctx, theirs)
	if err != nil {
		return err
	}
	*gone = append(*gone, theirs...)
	if hold && a.opts.StickyFor > 0 {
		for _, l := range theirs {
			if l.Workload != "" && slices.Contains(released, l.IP) {
				a.hold(ctx, l)
			}
		}
	}
	return nil
}

// hold keeps the released lease l for its workload (StickyFor); a failure
// only loses the stickiness.
func (a *Allocator) hold(ctx context.Context, l store.Lease) {
	hold := l
	hold.ContainerID, hold.Released = StickyID(l.Workload), a.opts.Now()
	if err := a.st.Reserve(ctx, hold); err != nil {
		a.log.Warn("cannot hold the released address for its workload", "workload", l.Workload, "ip", l.IP, "err", err)
	}
}

// makeRoom is called when set i has no free address: it reclaims the
// leases of vanished namespaces, and failing that gives up the oldest
// sticky hold in the set (expired ones first, being older). It reports
// whether it freed anything. Called with the lock held.
func (a *Allocator) makeRoom(ctx context.Context, i int) (bool, error) {
	var gone []store.Lease
	// No sticky holds for what is freed here: the room is wanted now.
	if err := a.reclaimStaleLocked(ctx, false, &gone); err != nil {
		return false, err
	}
	if len(gone) > 0 {
		a.log.Info("released the leases of containers whose namespace has gone", "leases", len(gone))
		return true, nil
	}
	if a.opts.StickyFor <= 0 {
		return false, nil
	}
	leases, err := a.st.List(ctx)
	if err != nil && !errors.Is(err, store.ErrCorrupt) {
		return false, err
	}
	var oldest *store.Lease
	for k := range leases {
		l := &leases[k]
		if l.IsSticky() && a.sets[i].RangeFor(l.IP) >= 0 && (oldest == nil || l.Released.Before(oldest.Released)) {
			oldest = l
		}
	}
	if oldest == nil {
		return false, nil
	}
	if err := a.releaseRead(ctx, *oldest); errors.Is(err, store.ErrReserved) || errors.Is(err, store.ErrNotFound) {
		return false, nil // another host changed it since it was read
	} else if err != nil {
		return false, err
	}
	a.log.Info("range full: giving up an address held for a workload", "workload", oldest.Workload, "ip", oldest.IP)
	return true, nil
}
