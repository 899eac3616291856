package etcd

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

var _ store.Checker = (*Store)(nil)

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
