package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// nextFreePage is how many keys NextFree reads at a time.
const nextFreePage = 256

// NextFree returns the lowest address in [from, to] without a lease key:
// a keys-only range read from from's key, so the leases below from are
// never read. It pages through a run of consecutive leases.
//
// Keys come in order, and the lease keys are in address order, so the
// first key read that is past want's own key shows want to be free. Keys
// that are not lease keys (another program's, between two lease keys) are
// passed over. Each page starts after the last key of the one before, so
// every read moves on, whatever the keys: the loop ends after at most one
// read per page of keys in the range.
func (s *Store) NextFree(ctx context.Context, from, to netip.Addr) (netip.Addr, error) {
	if err := s.requireLock("next free"); err != nil {
		return netip.Addr{}, err
	}
	if !validAddr(from) || !validAddr(to) || from.BitLen() != to.BitLen() {
		return netip.Addr{}, fmt.Errorf("next free in %s-%s: bad bounds", from, to)
	}
	if to.Less(from) {
		return netip.Addr{}, fmt.Errorf("no free address in %s-%s: %w", from, to, store.ErrNotFound)
	}
	end := s.leaseKey(to) + "\x00"
	want, key := from, s.leaseKey(from)
	for {
		rctx, cancel := s.request(ctx)
		resp, err := s.cli.Get(rctx, key, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(nextFreePage))
		cancel()
		if err != nil {
			return netip.Addr{}, s.unavailable(fmt.Sprintf("next free in %s-%s", from, to), err)
		}
		for _, kv := range resp.Kvs {
			switch k, wk := string(kv.Key), s.leaseKey(want); {
			case k > wk:
				return want, nil
			case k == wk && want == to:
				return netip.Addr{}, fmt.Errorf("no free address in %s-%s: %w", from, to, store.ErrNotFound)
			case k == wk:
				want = want.Next()
			} // k < wk: not a lease key
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return want, nil // no key at or after want's in the range
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Cursor returns the network's cursor of a range set. The cursor is
// shared by every host, so that an address released on one host is not
// handed out again by another while others are free.
func (s *Store) Cursor(ctx context.Context, set string) (netip.Addr, error) {
	if err := s.requireLock("cursor"); err != nil {
		return netip.Addr{}, err
	}
	if err := store.ValidateName("range set name", set); err != nil {
		return netip.Addr{}, fmt.Errorf("cursor: %w", err)
	}
	if ip, ok := s.cursors[set]; ok {
		return ip, nil
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.cursorKey(set))
	if err != nil {
		return netip.Addr{}, s.unavailable("read cursor "+set, err)
	}
	if len(resp.Kvs) == 0 {
		return netip.Addr{}, nil
	}
	return store.ParseCursor(s.log, set, resp.Kvs[0].Value), nil
}

// SetCursor records the cursor of a range set; Unlock writes it with the
// section's reservations, saving a round trip. It is a hint: when two
// hosts race, the last write wins, which costs a little fairness only.
func (s *Store) SetCursor(_ context.Context, set string, ip netip.Addr) error {
	if err := s.requireLock("set cursor"); err != nil {
		return err
	}
	if err := store.ValidateName("range set name", set); err != nil {
		return fmt.Errorf("set cursor: %w", err)
	}
	s.cursors[set] = ip
	return nil
}

// listPage is how many records List reads at a time.
const listPage = 1000

// rangeAll reads every key under prefix, in pages, all at one revision.
func (s *Store) rangeAll(ctx context.Context, prefix string, opts ...clientv3.OpOption) ([]*mvccKV, int64, error) {
	var out []*mvccKV
	end := clientv3.GetPrefixRangeEnd(prefix)
	key, rev := prefix, int64(0)
	for {
		o := append([]clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage), clientv3.WithRev(rev)}, opts...)
		rctx, cancel := s.request(ctx)
		resp, err := s.cli.Get(rctx, key, o...)
		cancel()
		if err != nil {
			return nil, 0, s.unavailable("read "+prefix, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		out = append(out, resp.Kvs...)
		if !resp.More || len(resp.Kvs) == 0 {
			return out, rev, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// List reads every lease, in address order (IPv4 first). Keys under the
// lease prefix that are not lease keys are not maclan's and are skipped.
func (s *Store) List(ctx context.Context) ([]store.Lease, error) {
	if err := s.requireLock("list"); err != nil {
		return nil, err
	}
	kvs, _, err := s.rangeAll(ctx, s.leasePrefix())
	if err != nil {
		return nil, err
	}
	leases := make([]store.Lease, 0, len(kvs))
	var bad []error
	for _, kv := range kvs {
		name := strings.TrimPrefix(string(kv.Key), s.leasePrefix())
		ip, ok := parseAddrKey(name)
		if !ok {
			continue // not maclan's: another program's key (fsck notes it)
		}
		l, err := decodeLease(ip, kv.Value)
		if err != nil {
			bad = append(bad, err)
			continue
		}
		leases = append(leases, l)
	}
	return leases, errors.Join(bad...)
}

// Networks lists the networks that have keys under prefix.
func Networks(ctx context.Context, opts Options) ([]string, error) {
	if opts.Prefix == "" {
		opts.Prefix = store.DefaultEtcdPrefix
	}
	if err := checkEndpoints(opts.Endpoints); err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	setDefault(&opts.DialTimeout, store.DefaultEtcdDialTimeout)
	setDefault(&opts.RequestTimeout, store.DefaultEtcdRequestTimeout)
	// A bare store, only to reach etcd: no network, no lock.
	s := &Store{opts: opts, root: opts.Prefix + "/"}
	cli, err := dial(opts)
	if err != nil {
		return nil, s.unavailable("connect within "+opts.DialTimeout.String(), err)
	}
	s.cli = cli
	defer s.Close() //nolint:errcheck // read-only
	kvs, _, err := s.rangeAll(ctx, s.root, clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	var names []string
	for _, kv := range kvs {
		n, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), s.root), "/")
		if (len(names) == 0 || names[len(names)-1] != n) && store.ValidateName("", n) == nil {
			names = append(names, n)
		}
	}
	return names, nil
}
