// Package allocator is the allocation policy of maclan-ipam: which address
// an attachment gets from each range set, honouring static requests,
// exclusions and a round-robin cursor. It owns no I/O: every read and write
// goes through a store.Store, and only inside store.WithLock.
package allocator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/iprange"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// ErrExhausted: a range set has no address left to hand out.
var ErrExhausted = errors.New("no free address")

// ErrInUseOnLAN: a device on the LAN answers for the address (a conflict
// record, or a probe answered now).
var ErrInUseOnLAN = errors.New("address in use on the LAN")

// Options tune an Allocator.
type Options struct {
	// Exclude lists prefixes never handed out.
	Exclude []netip.Prefix
	// Log receives a line when something odd is met and worked around (a
	// damaged lease in the way). Nil discards.
	Log *slog.Logger
	// Now stamps new leases (default time.Now).
	Now func() time.Time
	// ConflictLifetime is how long a conflict record keeps its address out
	// of use. After it, Allocate frees the address again, so that the next
	// ADD to reach it probes it again, and GC releases the record. Zero:
	// records last until an operator releases them (for a network without
	// conflict detection, where nothing would probe the address again).
	ConflictLifetime time.Duration

	// Lease lifecycle (lifecycle.go). Holder stamps every lease taken:
	// its host, boot, netns and workload fields.
	Holder store.Lease
	// StickyFor keeps a released address of a named workload for it that
	// long; 0: off.
	StickyFor time.Duration
	// StaleAfter is how old a lease whose namespace is gone must be before
	// it is reclaimed; NetnsGone tells whether a namespace is gone. Either
	// unset: never.
	StaleAfter time.Duration
	NetnsGone  func(path string) (bool, error)

	// GCHost, when set, limits GC to the containers of this host: on a
	// store that hosts share (etcd), a runtime's list of valid
	// attachments names only its own host's containers, and every other
	// host's leases would look gone.
	GCHost string

	// BootTime is when this boot began (zero: unknown). The sweep after a
	// reboot never gives back a lease created after it: no earlier boot
	// made that lease, whatever its record says (two hosts with one
	// identity, a cloned VM).
	BootTime time.Time

	// Spread, when set (to the host's identity), gives the host a cursor
	// of its own and a first walk that starts where the identity says, so
	// that hosts sharing a store do not race for the same addresses
	// (spread.go). Empty: one shared cursor, walks from the range start.
	Spread string

	// Prelude, if set, runs under the store's lock at the start of every
	// Allocate, before anything is read: work due under the lock once in a
	// while that would otherwise take the lock a second time. The IPAM
	// runs its sweep after a reboot here, which every ADD of the first
	// burst of a boot would otherwise queue for twice.
	Prelude func(ctx context.Context)
}

// Allocator hands out addresses from range sets kept in a store.
type Allocator struct {
	st   store.Store
	sets []iprange.RangeSet
	opts Options
	log  *slog.Logger
	// The sets and opts.Exclude indexed once, outside the store's lock.
	index    iprange.Index
	excluded iprange.Exclusions
}

// New returns an allocator over canonicalized range sets that do not
// overlap (as ipamconf.Parse leaves them).
func New(st store.Store, sets []iprange.RangeSet, opts Options) *Allocator {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Allocator{st: st, sets: sets, opts: opts, log: log,
		index: iprange.NewIndex(sets), excluded: iprange.NewExclusions(opts.Exclude)}
}

// Allocation is one address handed to an attachment.
type Allocation struct {
	Set   int           // index in the range sets
	Range iprange.Range // the range holding IP (for its subnet and gateway)
	IP    netip.Addr
	// Fresh: taken by this call, not held from an earlier ADD.
	Fresh bool
}

// The attachment under which conflict records are kept: addresses found in
// use on the LAN by a device that is not a container. Records are told apart
// by Lease.Conflict, not by this name; an operator frees them all with
// "maclan-ipam release --container maclan-conflict".
const (
	ConflictContainerID = "maclan-conflict"
	ConflictIfName      = "lan"
)

// setName is the store's name of a range set's cursor: its index, as the
// reference host-local names its last_reserved_ip files.
func setName(i int) string { return strconv.Itoa(i) }

// Allocate gives the attachment one address from every range set, all or
// nothing. Repeating it returns the addresses already held. requested are
// static addresses (already validated against the configuration): each
// one is taken for the set that contains it.
func (a *Allocator) Allocate(ctx context.Context, containerID, ifName string, requested []netip.Addr) (allocs []Allocation, err error) {
	err = store.WithLock(ctx, a.st, func() error {
		if a.opts.Prelude != nil {
			a.opts.Prelude(ctx)
		}
		allocs, err = a.allocateLocked(ctx, containerID, ifName, requested)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("allocate for %s/%s: %w", containerID, ifName, err)
	}
	return allocs, nil
}

func (a *Allocator) allocateLocked(ctx context.Context, containerID, ifName string, requested []netip.Addr) (allocs []Allocation, err error) {
	a.freeExpiredConflicts(ctx)
	held, err := a.st.GetByID(ctx, containerID, ifName)
	if err != nil {
		return nil, err
	}
	var fresh []netip.Addr // taken by this call: released again if a later set fails
	defer func() {
		if err != nil {
			err = errors.Join(err, a.rollback(ctx, fresh))
		}
	}()
	a.restamp(ctx, held)
	wants, holds := a.wantedBySet(requested), a.heldBySet(held)
	for i, set := range a.sets {
		want := wants[i]
		if l, ok := holds[i]; ok {
			if want.IsValid() && want != l {
				return nil, fmt.Errorf("range set %d: attachment already holds %s, cannot also take the requested %s", i, l, want)
			}
			allocs = append(allocs, Allocation{Set: i, Range: set[set.RangeFor(l)], IP: l})
			continue
		}
		var ip netip.Addr
		if want.IsValid() {
			ip, err = a.reserveStatic(ctx, containerID, ifName, want)
		} else {
			ip, err = a.reserveDynamic(ctx, i, containerID, ifName)
		}
		if err != nil {
			return nil, fmt.Errorf("range set %d: %w", i, err)
		}
		fresh = append(fresh, ip)
		allocs = append(allocs, Allocation{Set: i, Range: set[set.RangeFor(ip)], IP: ip, Fresh: true})
	}
	return allocs, nil
}

// wantedBySet maps each range set to the last requested address in it.
func (a *Allocator) wantedBySet(requested []netip.Addr) map[int]netip.Addr {
	m := map[int]netip.Addr{}
	for _, ip := range requested {
		if i, _ := a.index.Find(ip); i >= 0 {
			m[i] = ip
		}
	}
	return m
}

// heldBySet maps each range set to the address of the first held lease in
// it.
func (a *Allocator) heldBySet(held []store.Lease) map[int]netip.Addr {
	m := map[int]netip.Addr{}
	for _, l := range held {
		if i, _ := a.index.Find(l.IP); i >= 0 {
			if _, dup := m[i]; !dup {
				m[i] = l.IP
			}
		}
	}
	return m
}

// rollback releases the addresses taken by a failed Allocate.
func (a *Allocator) rollback(ctx context.Context, ips []netip.Addr) error {
	var errs []error
	for _, ip := range ips {
		if err := a.st.Release(ctx, ip); err != nil {
			errs = append(errs, fmt.Errorf("roll back %s: %w", ip, err))
		}
	}
	return errors.Join(errs...)
}

func (a *Allocator) reserveStatic(ctx context.Context, containerID, ifName string, ip netip.Addr) (netip.Addr, error) {
	err := a.st.Reserve(ctx, a.newLease(ip, containerID, ifName))
	if errors.Is(err, store.ErrReserved) {
		if l, gerr := a.st.Get(ctx, ip); gerr == nil && l.Conflict != "" {
			return netip.Addr{}, fmt.Errorf("requested address %s is in use on the LAN by %s (conflict recorded %s; "+
				"once that device has gone: maclan-ipam release --network NAME --ip %s): %w: %w",
				ip, l.Conflict, l.Created.UTC().Format(time.RFC3339), ip, ErrInUseOnLAN, err)
		}
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("requested address %s: %w", ip, err)
	}
	return ip, nil
}

// segment is a stretch of one range to walk.
type segment struct {
	rg       iprange.Range
	from, to netip.Addr
}

// walk returns the stretches of set i in round-robin order: from just after
// the cursor to the end of the set, then from its start up to the cursor.
func (a *Allocator) walk(ctx context.Context, i int) ([]segment, error) {
	set := a.sets[i]
	cur, err := a.st.Cursor(ctx, a.cursorName(i))
	if err != nil {
		return nil, err
	}
	ri := -1
	if cur.IsValid() {
		ri = set.RangeFor(cur)
	}
	if ri < 0 && a.opts.Spread != "" {
		cur = a.spreadStart(set) // spread.go
		ri = set.RangeFor(cur)
	}
	if ri < 0 {
		segs := make([]segment, len(set))
		for k, rg := range set {
			segs[k] = segment{rg, rg.RangeStart, rg.RangeEnd}
		}
		return segs, nil
	}
	var segs []segment
	if rg := set[ri]; cur != rg.RangeEnd {
		segs = append(segs, segment{rg, cur.Next(), rg.RangeEnd})
	}
	for k := 1; k < len(set); k++ {
		rg := set[(ri+k)%len(set)]
		segs = append(segs, segment{rg, rg.RangeStart, rg.RangeEnd})
	}
	rg := set[ri]
	return append(segs, segment{rg, rg.RangeStart, cur}), nil
}

// candidates calls try with each address of set i that the store believes
// free and the configuration allows, in round-robin order, until try
// returns true or an error.
func (a *Allocator) candidates(ctx context.Context, i int, try func(rg iprange.Range, ip netip.Addr) (bool, error)) error {
	segs, err := a.walk(ctx, i)
	if err != nil {
		return err
	}
	for _, sg := range segs {
		for from := sg.from; from.IsValid() && from.Compare(sg.to) <= 0; {
			ip, err := a.st.NextFree(ctx, from, sg.to)
			if errors.Is(err, store.ErrNotFound) {
				break
			}
			if err != nil {
				return err
			}
			if sg.rg.Reserved(ip) {
				from = ip.Next()
				continue
			}
			if ex, next := a.excluded.Excluded(ip); ex {
				from = next // skip the whole run of excluded addresses
				continue
			}
			done, err := try(sg.rg, ip)
			if err != nil || done {
				return err
			}
			from = ip.Next()
		}
	}
	return fmt.Errorf("%s: %w", describe(a.sets[i]), ErrExhausted)
}

func describe(set iprange.RangeSet) string {
	s := ""
	for k, rg := range set {
		if k > 0 {
			s += ", "
		}
		s += rg.String()
	}
	return s
}

// reserveDynamic takes an address of set i for the attachment: the one
// its workload holds (sticky), else the next free one; when the set is
// full, it makes room (lifecycle.go) and tries once more.
func (a *Allocator) reserveDynamic(ctx context.Context, i int, containerID, ifName string) (netip.Addr, error) {
	if ip, ok, err := a.takeSticky(ctx, i, containerID, ifName); err != nil || ok {
		return ip, err
	}
	ip, err := a.reserveNext(ctx, i, containerID, ifName)
	if !errors.Is(err, ErrExhausted) {
		return ip, err
	}
	if freed, ferr := a.makeRoom(ctx, i); ferr != nil || !freed {
		return ip, errors.Join(err, ferr)
	}
	return a.reserveNext(ctx, i, containerID, ifName)
}

// reserveNext takes the next free address of set i after its cursor and
// moves the cursor there.
func (a *Allocator) reserveNext(ctx context.Context, i int, containerID, ifName string) (netip.Addr, error) {
	var got netip.Addr
	err := a.candidates(ctx, i, func(_ iprange.Range, ip netip.Addr) (bool, error) {
		err := a.st.Reserve(ctx, a.newLease(ip, containerID, ifName))
		switch {
		case err == nil:
			got = ip
			return true, nil
		case errors.Is(err, store.ErrReserved):
			// The store's free-address hint was stale; it has corrected
			// it. A damaged lease in the way is worth a line.
			if errors.Is(err, store.ErrCorrupt) {
				a.log.Warn("skipping an address whose lease is damaged; run fsck", "ip", ip, "err", err)
			}
			return false, nil
		default:
			return false, err
		}
	})
	if err != nil {
		return netip.Addr{}, err
	}
	if err := a.st.SetCursor(ctx, a.cursorName(i), got); err != nil {
		// The ADD fails (a full disk, say): it must not keep the address.
		if rerr := a.st.Release(ctx, got); rerr != nil {
			err = errors.Join(err, fmt.Errorf("release %s: %w", got, rerr))
		}
		return netip.Addr{}, err
	}
	return got, nil
}

// MarkConflict records that a device with MAC owner answers for ip on the
// LAN: the attachment's lease of ip (if it holds it) becomes a conflict
// record, stamped now, so the address is not handed out again until the
// record expires (Options.ConflictLifetime) or an operator releases it.
func (a *Allocator) MarkConflict(ctx context.Context, ip netip.Addr, owner, containerID, ifName string) error {
	return store.WithLock(ctx, a.st, func() error {
		l, err := a.st.Get(ctx, ip)
		switch {
		case err == nil && l.ContainerID == containerID && l.IfName == ifName:
			if err := a.st.Release(ctx, ip); err != nil {
				return fmt.Errorf("release %s to record its conflict: %w", ip, err)
			}
		case err == nil:
			return nil // someone else holds it now: nothing to record
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		err = a.st.Reserve(ctx, store.Lease{IP: ip, ContainerID: ConflictContainerID, IfName: ConflictIfName,
			Created: a.opts.Now(), Conflict: owner})
		if err != nil && !errors.Is(err, store.ErrReserved) {
			return fmt.Errorf("record the conflict on %s: %w", ip, err)
		}
		return nil
	})
}

// Release frees every address of the attachment. An unknown attachment is
// not an error.
func (a *Allocator) Release(ctx context.Context, containerID, ifName string) (ips []netip.Addr, err error) {
	err = store.WithLock(ctx, a.st, func() error {
		ips, err = a.giveBack(ctx, containerID, ifName)
		return err
	})
	return ips, err
}

// Check verifies that the attachment holds exactly one intact lease in
// each range set and returns them.
func (a *Allocator) Check(ctx context.Context, containerID, ifName string) (allocs []Allocation, err error) {
	err = store.WithLock(ctx, a.st, func() error {
		held, err := a.st.GetByID(ctx, containerID, ifName)
		if err != nil {
			return err
		}
		var missing []error
		for i, set := range a.sets {
			n := 0
			for _, l := range held {
				if k := set.RangeFor(l.IP); k >= 0 {
					n++
					allocs = append(allocs, Allocation{Set: i, Range: set[k], IP: l.IP})
				}
			}
			switch n {
			case 0:
				missing = append(missing, fmt.Errorf("no lease in range set %d (%s)", i, describe(set)))
			case 1:
			default:
				missing = append(missing, fmt.Errorf("%d leases in range set %d (%s), want one", n, i, describe(set)))
			}
		}
		return errors.Join(missing...)
	})
	if err != nil {
		return nil, fmt.Errorf("check %s/%s: %w", containerID, ifName, err)
	}
	return allocs, nil
}

// Attachment is a (container ID, interface) pair.
type Attachment = store.Attachment

// GC releases every lease whose attachment is not in valid, and every
// expired conflict record, and returns them. Damaged records are kept
// (their holder is unknown) and logged.
func (a *Allocator) GC(ctx context.Context, valid []Attachment) (gone []store.Lease, err error) {
	keep := make(map[Attachment]bool, len(valid))
	for _, at := range valid {
		keep[at] = true
	}
	err = store.WithLock(ctx, a.st, func() error {
		leases, err := a.st.List(ctx)
		if err != nil {
			if !errors.Is(err, store.ErrCorrupt) {
				return err
			}
			a.log.Warn("GC keeps damaged leases; run fsck", "err", err)
		}
		stale := map[Attachment]bool{}
		for _, l := range leases {
			if l.Conflict != "" {
				if a.conflictExpired(l) {
					gone = append(gone, l) // released by address below
				}
				continue // not a container's: kept until it expires or an operator releases it
			}
			if l.IsSticky() {
				if a.stickyExpired(l) {
					gone = append(gone, l) // released by address below
				}
				continue // kept for its workload, whom the runtime does not list
			}
			if a.opts.GCHost != "" && l.Host != a.opts.GCHost {
				continue // another host's container (or one recorded before hosts were): its runtime's GC decides
			}
			if at := (Attachment{ContainerID: l.ContainerID, IfName: l.IfName}); !keep[at] {
				gone = append(gone, l)
				stale[at] = true
			}
		}
		var errs []error
		for at := range stale {
			if _, err := a.st.ReleaseByID(ctx, at.ContainerID, at.IfName); err != nil {
				errs = append(errs, err)
			}
		}
		// A lease missing from its attachment's index (outside damage
		// only) survives ReleaseByID; release it by address.
		for _, l := range gone {
			if err := a.releaseRead(ctx, l); err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrReserved) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
	return gone, err
}

// Available checks that every range set still has an address to hand out,
// without taking one: an ADD needs one from each set. The answer is as
// good as the store's free-address hint.
func (a *Allocator) Available(ctx context.Context) error {
	return store.WithLock(ctx, a.st, func() error {
		var errs []error
		expired := a.expiredConflicts(ctx)
		for i := range a.sets {
			err := a.candidates(ctx, i, func(iprange.Range, netip.Addr) (bool, error) { return true, nil })
			if errors.Is(err, ErrExhausted) && slices.ContainsFunc(expired, func(l store.Lease) bool { return a.sets[i].RangeFor(l.IP) >= 0 }) {
				continue // the next ADD frees an expired conflict record here
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("range set %d: %w", i, err))
			}
		}
		return errors.Join(errs...)
	})
}

// conflictExpired reports whether l is a conflict record older than the
// lifetime. A record stamped further in the future than one lifetime (a
// clock set back since) is expired too, or it would last until the clock
// caught up.
func (a *Allocator) conflictExpired(l store.Lease) bool {
	if l.Conflict == "" || a.opts.ConflictLifetime <= 0 {
		return false
	}
	age := a.opts.Now().Sub(l.Created)
	return age >= a.opts.ConflictLifetime || age < -a.opts.ConflictLifetime
}

// expiredConflicts returns the expired conflict records, found through the
// attachment they are all kept under, so that the cost grows with the
// number of records, not of leases. Called with the lock held. A record
// that cannot be read is logged and left alone: it only delays an expiry.
func (a *Allocator) expiredConflicts(ctx context.Context) []store.Lease {
	if a.opts.ConflictLifetime <= 0 {
		return nil
	}
	records, err := a.st.GetByID(ctx, ConflictContainerID, ConflictIfName)
	if err != nil {
		a.log.Warn("cannot read the conflict records; expired ones stay until GC", "err", err)
		return nil
	}
	return slices.DeleteFunc(records, func(l store.Lease) bool { return !a.conflictExpired(l) })
}

// freeExpiredConflicts releases the expired conflict records, called with
// the lock held before a walk: an expired record's address becomes a free
// candidate again, which the ADD that takes it probes before use (a clean
// probe: the new lease replaces the record; an answer: MarkConflict records
// it anew, stamped now). A failure is logged: it only delays an expiry.
func (a *Allocator) freeExpiredConflicts(ctx context.Context) {
	for _, l := range a.expiredConflicts(ctx) {
		if err := a.releaseRead(ctx, l); errors.Is(err, store.ErrReserved) {
			continue // another host's lease now
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			a.log.Warn("cannot free an expired conflict record", "ip", l.IP, "err", err)
			continue
		}
		a.log.Info("conflict record expired; the address is probed again before it is handed out",
			"ip", l.IP, "owner", l.Conflict, "recorded", l.Created)
	}
}
