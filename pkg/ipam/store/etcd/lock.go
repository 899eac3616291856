package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/maclan-cni/maclan/pkg/flock"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

func unflock(f *os.File) error { return syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }

// Lock takes the per-host lock of the network: flock(2) on a local file,
// polled until ctx is done or Options.LockTimeout has passed.
func (s *Store) Lock(ctx context.Context) error {
	if s.locked {
		return fmt.Errorf("lock network %q: already held by this store", s.network)
	}
	if s.lockFile == nil {
		return fmt.Errorf("lock network %q: store closed", s.network)
	}
	deadline := time.Now().Add(s.opts.LockTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	err := flock.Wait(s.lockFile, deadline, ctx.Done())
	if errors.Is(err, flock.ErrTimeout) {
		return fmt.Errorf("lock %s after %s: %w", s.lockFile.Name(), s.opts.LockTimeout, store.ErrLockTimeout)
	}
	if err != nil {
		return fmt.Errorf("lock %s: %w: %w", s.lockFile.Name(), store.ErrUnavailable, err)
	}
	s.locked, s.sectionLease, s.pending, s.cursors, s.records, s.tainted = true, 0, map[string]clientv3.LeaseID{}, map[string]netip.Addr{}, map[string]record{}, false
	s.replayJournal(ctx)
	return nil
}

// Unlock makes the section's reservations permanent, unless etcd failed
// to answer during the section, and releases the lock. Reservations that
// are not made permanent expire after PendingTTL.
func (s *Store) Unlock() error {
	if !s.locked {
		return fmt.Errorf("unlock network %q: not locked", s.network)
	}
	var err error
	switch {
	case len(s.pending) == 0 && len(s.cursors) == 0:
	case s.tainted:
		err = s.drop()
	default:
		err = s.commit()
	}
	s.locked, s.sectionLease, s.pending, s.cursors, s.records = false, 0, nil, nil, nil
	if uerr := unflock(s.lockFile); uerr != nil {
		err = errors.Join(err, fmt.Errorf("unlock %s: %w: %w", s.lockFile.Name(), store.ErrUnavailable, uerr))
	}
	return err
}

// commit detaches the pending keys from their etcd leases, in
// transactions that check first that each is still bound to the lease it
// was written with, and then writes the cursors. A lease and its index key
// always travel in the same transaction. An ADD takes one transaction; an
// attachment with many range sets takes as many as etcd's limit on
// operations requires (each carries at least one pair or cursor, so the
// loop ends).
func (s *Store) commit() error {
	keys := make([]string, 0, len(s.pending))
	for k := range s.pending {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	pairs := pairUp(keys)
	sets := make([]string, 0, len(s.cursors))
	for set := range s.cursors {
		sets = append(sets, set)
	}
	slices.Sort(sets)
	for len(pairs) > 0 || len(sets) > 0 {
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		n := 0
		for n < len(pairs) && (n == 0 || len(ops)+len(pairs[n]) <= maxTxnOps) {
			for _, k := range pairs[n] {
				cmps = append(cmps, clientv3.Compare(clientv3.LeaseValue(k), "=", int64(s.pending[k])))
				ops = append(ops, clientv3.OpPut(k, "", clientv3.WithIgnoreValue()))
			}
			n++
		}
		c := 0
		for n == len(pairs) && c < len(sets) && len(ops) < maxTxnOps {
			ops = append(ops, clientv3.OpPut(s.cursorKey(sets[c]), s.cursors[sets[c]].String()))
			c++
		}
		if err := s.commitTxn(cmps, ops, pairs); err != nil {
			return err
		}
		pairs, sets = pairs[n:], sets[c:]
	}
	return nil
}

// commitTxn runs one transaction of commit; pairs are the keys not yet
// made permanent, for the unsure journal.
func (s *Store) commitTxn(cmps []clientv3.Cmp, ops []clientv3.Op, pairs [][]string) error {
	ctx, cancel := s.request(context.Background())
	sent := ctx.Err() == nil // else the connection was known lost: not sent
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	cancel()
	if err != nil {
		err = s.unavailable("make reservations permanent within "+s.opts.RequestTimeout.String()+" (they expire in "+s.opts.PendingTTL.String()+")", err)
		if sent {
			var rest []string
			for _, p := range pairs {
				rest = append(rest, p...)
			}
			if jerr := s.noteUnsure(rest); jerr != nil {
				err = errors.Join(err, fmt.Errorf("note the unsure commit in %s (a DEL of the attachment releases it): %w", s.journalPath(), jerr))
			}
		}
		return err
	}
	if !resp.Succeeded {
		// Only an expiry (a section slower than PendingTTL) or a hand
		// edit gets here; the address may now be someone else's. The
		// cursors, hints only, were not written either.
		return fmt.Errorf("etcd at %s, network %q: reservations expired before they were made permanent: %w", s.Endpoints(), s.network, store.ErrUnavailable)
	}
	return nil
}

// pairUp groups each lease key with the index key of the same address
// (both end in the address), so that a commit split over several
// transactions never separates them.
func pairUp(keys []string) [][]string {
	byAddr := map[string][]string{}
	var order []string
	for _, k := range keys {
		a := k[strings.LastIndexByte(k, '/')+1:]
		if _, ok := byAddr[a]; !ok {
			order = append(order, a)
		}
		byAddr[a] = append(byAddr[a], k)
	}
	out := make([][]string, 0, len(order))
	for _, a := range order {
		out = append(out, byAddr[a])
	}
	return out
}

// drop revokes the section's etcd lease, deleting its reservations now
// rather than at expiry; if etcd is still away they expire by themselves.
func (s *Store) drop() error {
	err := fmt.Errorf("etcd at %s, network %q: etcd did not answer during the call; its reservations were not kept: %w", s.Endpoints(), s.network, store.ErrUnavailable)
	if s.sectionLease == 0 {
		return err
	}
	ctx, cancel := s.request(context.Background())
	defer cancel()
	if _, rerr := s.cli.Revoke(ctx, s.sectionLease); rerr != nil {
		s.log.Info("could not revoke the etcd lease of dropped reservations; they expire by themselves", "ttl", s.opts.PendingTTL, "err", rerr)
	}
	return err
}

// grant returns the section's etcd lease, granting it on first use.
func (s *Store) grant(ctx context.Context) (clientv3.LeaseID, error) {
	if s.sectionLease != 0 {
		return s.sectionLease, nil
	}
	ctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.cli.Grant(ctx, int64((s.opts.PendingTTL+time.Second-1)/time.Second))
	if err != nil {
		return 0, s.unavailable("grant a lease for new reservations", err)
	}
	s.sectionLease = resp.ID
	return s.sectionLease, nil
}
