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

// Problem and FsckReport are the store package's, shared by every backend.
type (
	Problem    = store.Problem
	FsckReport = store.FsckReport
)

// Fsck reads the whole network at one revision and checks that every
// lease decodes and is named by its holder's index, and that every index
// key names a lease of its attachment. Since both are
// always written and deleted in one transaction, only outside damage (a
// hand edit with etcdctl) finds anything. With repair: an orphan lease is
// indexed, a stale index key deleted, a damaged lease deleted (which frees
// its address; the report says so), an unreadable cursor deleted. Each
// repair is a transaction that checks the key has not changed since it was
// read. Repair touches only keys of the store's own exact shapes (see
// parseKey): any other key under the prefix may be another program's, or
// another maclan store's whose prefix is nested in this one's, and is
// reported as "foreign" and left alone. The lock must be held.
func (s *Store) Fsck(ctx context.Context, repair bool) (FsckReport, error) {
	var rep FsckReport
	if err := s.requireLock("fsck"); err != nil {
		return rep, err
	}
	kvs, _, err := s.rangeAll(ctx, s.root)
	if err != nil {
		return rep, err
	}
	type indexEntry struct {
		kv         *mvccKV
		id, ifName string
	}
	leases := map[netip.Addr]*mvccKV{}
	holders := map[netip.Addr]store.Lease{} // the leases that decode
	index := map[netip.Addr][]indexEntry{}
	attachments := map[string]bool{}
	var problems []struct {
		p   Problem
		fix func() error // nil: reported, never repaired
	}
	note := func(p Problem, fix func() error) {
		problems = append(problems, struct {
			p   Problem
			fix func() error
		}{p, fix})
	}
	deleteIfUnchanged := func(kv *mvccKV) func() error {
		return func() error {
			return s.ifUnchanged(ctx, kv, clientv3.OpDelete(string(kv.Key)))
		}
	}
	for _, kv := range kvs {
		switch k := parseKey(strings.TrimPrefix(string(kv.Key), s.root)); k.kind {
		case keyLease:
			leases[k.ip] = kv
		case keyIndex:
			index[k.ip] = append(index[k.ip], indexEntry{kv, k.containerID, k.ifName})
		case keyCursor:
			if _, err := netip.ParseAddr(string(kv.Value)); err != nil {
				note(Problem{Kind: "cursor", Where: string(kv.Key), Detail: "unreadable"}, deleteIfUnchanged(kv))
			}
		default:
			note(Problem{Kind: "foreign", Where: string(kv.Key), Detail: "not a key of maclan's (another program's, or a store whose prefix is nested in this one); left alone"}, nil)
		}
	}

	for ip, kv := range leases {
		if kv.Lease != 0 {
			rep.Pending++
		}
		l, err := decodeLease(ip, kv.Value)
		if err != nil {
			// Its holder is unknown: deleting it frees the address.
			// Its index keys show up as stale below.
			note(Problem{Kind: "corrupt-lease", Where: string(kv.Key), Detail: err.Error() + "; repair deletes it, which frees the address"},
				deleteIfUnchanged(kv))
			continue
		}
		rep.Leases++
		attachments[l.ContainerID+"="+l.IfName] = true
		holders[ip] = l
		found := false
		for _, e := range index[ip] {
			found = found || (e.id == l.ContainerID && e.ifName == l.IfName)
		}
		if !found {
			ik := s.attachKey(l.ContainerID, l.IfName, ip)
			note(Problem{Kind: "orphan-lease", Where: string(kv.Key), Detail: fmt.Sprintf("held by %s/%s, whose index does not name it", l.ContainerID, l.IfName)},
				func() error { return s.ifUnchanged(ctx, kv, clientv3.OpPut(ik, "")) })
		}
	}
	for ip, entries := range index {
		for _, e := range entries {
			l, ok := holders[ip]
			if ok && l.ContainerID == e.id && l.IfName == e.ifName {
				continue
			}
			detail := "names " + ip.String() + ", which has no lease"
			if _, present := leases[ip]; present {
				detail = "names " + ip.String() + ", whose lease is someone else's or damaged"
			}
			note(Problem{Kind: "stale-index", Where: string(e.kv.Key), Detail: detail}, deleteIfUnchanged(e.kv))
		}
	}
	rep.Attachments = len(attachments)

	for _, pr := range problems {
		p := pr.p
		if repair && pr.fix != nil {
			if err := pr.fix(); err != nil {
				rep.Problems = append(rep.Problems, p)
				return rep, fmt.Errorf("repair %s: %w", p.Where, err)
			}
			p.Repaired = true
		}
		rep.Problems = append(rep.Problems, p)
	}
	return rep, nil
}

// ifUnchanged runs ops in a transaction if kv has not been modified since
// it was read.
func (s *Store) ifUnchanged(ctx context.Context, kv *mvccKV, ops ...clientv3.Op) error {
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)).Then(ops...).Commit()
	if err != nil {
		return s.unavailable("repair "+string(kv.Key), err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s changed while fsck ran; run it again", kv.Key)
	}
	return nil
}

// importBatch is how many leases one Import transaction carries: two puts
// and one compare each, under etcd's default limit of 128 operations.
const importBatch = 50

// Import adds many leases at once, permanently, for migrate: batches of
// leases each written with its index key in one transaction that succeeds
// only if none of the batch's addresses is taken. A batch that meets a
// taken address is retried lease by lease. A lease already held by the
// same attachment is skipped; one held by another is reported
// (ErrReserved) and the rest imported. It returns how many leases the
// store holds for the attachments given.
func (s *Store) Import(ctx context.Context, leases []store.Lease) (int, error) {
	if err := s.requireLock("import"); err != nil {
		return 0, err
	}
	for _, l := range leases {
		if err := store.ValidateAttachment(l.ContainerID, l.IfName); err != nil {
			return 0, fmt.Errorf("import %s: %w", l.IP, err)
		}
		if !validAddr(l.IP) {
			return 0, fmt.Errorf("import %s: not a plain unicast address", l.IP)
		}
	}
	held := 0
	var conflicts []error
	for len(leases) > 0 {
		batch := leases[:min(importBatch, len(leases))]
		leases = leases[len(batch):]
		ok, err := s.importTxn(ctx, batch)
		if err != nil {
			return held, err
		}
		if ok {
			held += len(batch)
			continue
		}
		for _, l := range batch {
			ok, err := s.importTxn(ctx, []store.Lease{l})
			if err != nil {
				return held, err
			}
			if ok {
				held++
				continue
			}
			rctx, cancel := s.request(ctx)
			resp, err := s.cli.Get(rctx, s.leaseKey(l.IP))
			cancel()
			if err != nil {
				return held, s.unavailable("import "+l.IP.String(), err)
			}
			var have store.Lease
			var derr error
			if len(resp.Kvs) > 0 {
				have, derr = decodeLease(l.IP, resp.Kvs[0].Value)
			}
			if derr == nil && have.ContainerID == l.ContainerID && have.IfName == l.IfName {
				held++ // adopted by an earlier run
				continue
			}
			conflicts = append(conflicts, fmt.Errorf("import %s for %s/%s: held by %s/%s: %w", l.IP, l.ContainerID, l.IfName, have.ContainerID, have.IfName, errors.Join(store.ErrReserved, derr)))
		}
	}
	return held, errors.Join(conflicts...)
}

func (s *Store) importTxn(ctx context.Context, batch []store.Lease) (bool, error) {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for _, l := range batch {
		lk := s.leaseKey(l.IP)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(lk), "=", 0))
		ops = append(ops, clientv3.OpPut(lk, string(encodeLease(l))), clientv3.OpPut(s.attachKey(l.ContainerID, l.IfName, l.IP), ""))
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.cli.Txn(rctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, s.unavailable("import", err)
	}
	return resp.Succeeded, nil
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
