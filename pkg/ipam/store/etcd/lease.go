package etcd

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// Reserve records l in one transaction: the lease key, created only if
// absent, and its index key.
func (s *Store) Reserve(ctx context.Context, l store.Lease) error {
	if err := s.requireLock("reserve"); err != nil {
		return err
	}
	l, err := store.ForReserve(l)
	if err != nil {
		return err
	}
	id, err := s.grant(ctx)
	if err != nil {
		return fmt.Errorf("reserve %s: %w", l.IP, err)
	}
	lk, ik := s.leaseKey(l.IP), s.attachKey(l.ContainerID, l.IfName, l.IP)
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(lk), "=", 0)).
		Then(clientv3.OpPut(lk, string(encodeLease(l)), clientv3.WithLease(id)), clientv3.OpPut(ik, "", clientv3.WithLease(id))).
		Else(clientv3.OpGet(lk)).
		Commit()
	if err != nil {
		return s.unavailable("reserve "+l.IP.String(), err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 { // released again in between
			return fmt.Errorf("reserve %s: %w", l.IP, store.ErrReserved)
		}
		held, derr := decodeLease(l.IP, kvs[0].Value)
		if derr != nil {
			return fmt.Errorf("reserve %s: %w: %w", l.IP, store.ErrReserved, derr)
		}
		return fmt.Errorf("reserve %s: held by container %s interface %s: %w", l.IP, held.ContainerID, held.IfName, store.ErrReserved)
	}
	s.pending[lk], s.pending[ik] = id, id
	s.records[lk] = record{value: string(encodeLease(l)), index: ik}
	return nil
}

// Release removes the lease of ip whoever holds it, with its index key, if
// it has not changed since it was read.
func (s *Store) Release(ctx context.Context, ip netip.Addr) error {
	if err := s.requireLock("release"); err != nil {
		return err
	}
	if !validAddr(ip) {
		return fmt.Errorf("release %s: not a plain unicast address", ip)
	}
	lk := s.leaseKey(ip)
	for range 5 { // a concurrent change of the same lease is rare; retry a few times
		kv, err := s.readLeaseKV(ctx, "release", ip)
		if err != nil {
			return err
		}
		ops := []clientv3.Op{clientv3.OpDelete(lk)}
		var ik string
		if l, err := decodeLease(ip, kv.Value); err == nil {
			ik = s.attachKey(l.ContainerID, l.IfName, ip)
			ops = append(ops, clientv3.OpDelete(ik))
		} // a damaged record: its holder, and so its index key, is unknown (fsck finds it)
		rctx, cancel := s.request(ctx)
		tresp, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(lk), "=", kv.ModRevision)).Then(ops...).Commit()
		cancel()
		if err != nil {
			return s.unavailable("release "+ip.String(), err)
		}
		if tresp.Succeeded {
			delete(s.pending, lk)
			delete(s.pending, ik)
			return nil
		}
	}
	return fmt.Errorf("release %s: the lease kept changing under us: %w", ip, store.ErrUnavailable)
}

// readLeaseKV reads the record of ip with its key's revision, for a
// transaction that must find it unchanged (op names the operation in
// errors). ErrNotFound if there is none.
func (s *Store) readLeaseKV(ctx context.Context, op string, ip netip.Addr) (*mvccKV, error) {
	rctx, cancel := s.request(ctx)
	resp, err := s.cli.Get(rctx, s.leaseKey(ip))
	cancel()
	if err != nil {
		return nil, s.unavailable(op+" "+ip.String(), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%s %s: %w", op, ip, store.ErrNotFound)
	}
	return resp.Kvs[0], nil
}

// ReleaseIf releases the lease of want.IP only if it is still the record
// the caller read (same holder, creation time, conflict and release time):
// hosts share the store but not the lock, so between a caller's List and
// its release another host may have made the address a live lease, which
// a plain Release would delete. A changed record is left alone and
// reported as ErrReserved.
func (s *Store) ReleaseIf(ctx context.Context, want store.Lease) error {
	if err := s.requireLock("release"); err != nil {
		return err
	}
	ip := want.IP
	if !validAddr(ip) {
		return fmt.Errorf("release %s: not a plain unicast address", ip)
	}
	lk := s.leaseKey(ip)
	kv, err := s.readLeaseKV(ctx, "release", ip)
	if err != nil {
		return err
	}
	l, err := decodeLease(ip, kv.Value)
	if err != nil {
		return fmt.Errorf("release %s: %w", ip, err)
	}
	if l.ContainerID != want.ContainerID || l.IfName != want.IfName || !l.Created.Equal(want.Created) ||
		l.Conflict != want.Conflict || !l.Released.Equal(want.Released) {
		return fmt.Errorf("release %s: it changed since it was read (now %s/%s): %w", ip, l.ContainerID, l.IfName, store.ErrReserved)
	}
	ik := s.attachKey(l.ContainerID, l.IfName, ip)
	rctx, cancel := s.request(ctx)
	tresp, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(lk), "=", kv.ModRevision)).
		Then(clientv3.OpDelete(lk), clientv3.OpDelete(ik)).Commit()
	cancel()
	if err != nil {
		return s.unavailable("release "+ip.String(), err)
	}
	if !tresp.Succeeded {
		return fmt.Errorf("release %s: it changed since it was read: %w", ip, store.ErrReserved)
	}
	delete(s.pending, lk)
	delete(s.pending, ik)
	return nil
}

// Restamp replaces the record of l.IP, which l's attachment must hold,
// with l (store.Restamper), in a transaction that checks that the record
// has not changed since it was read. A reservation not yet made permanent
// (bound to an etcd lease until Unlock) is left as it is.
func (s *Store) Restamp(ctx context.Context, l store.Lease) error {
	if err := s.requireLock("restamp"); err != nil {
		return err
	}
	l, err := store.ForReserve(l)
	if err != nil {
		return err
	}
	lk := s.leaseKey(l.IP)
	kv, err := s.readLeaseKV(ctx, "restamp", l.IP)
	if err != nil {
		return err
	}
	old, err := decodeLease(l.IP, kv.Value)
	if err != nil {
		return fmt.Errorf("restamp %s: %w", l.IP, err)
	}
	if old.ContainerID != l.ContainerID || old.IfName != l.IfName {
		return fmt.Errorf("restamp %s: held by %s/%s: %w", l.IP, old.ContainerID, old.IfName, store.ErrNotFound)
	}
	if kv.Lease != 0 {
		return nil // still a reservation of a call under way
	}
	rctx, cancel := s.request(ctx)
	tresp, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(lk), "=", kv.ModRevision)).
		Then(clientv3.OpPut(lk, string(encodeLease(l)))).Commit()
	cancel()
	if err != nil {
		return s.unavailable("restamp "+l.IP.String(), err)
	}
	if !tresp.Succeeded {
		return fmt.Errorf("restamp %s: it changed since it was read: %w", l.IP, store.ErrReserved)
	}
	return nil
}

// attachment checks the lock and the names for op on an attachment, and
// returns how messages name it and the prefix of its index keys.
func (s *Store) attachment(op, containerID, ifName string) (subject, prefix string, err error) {
	if err := s.requireLock(op); err != nil {
		return "", "", err
	}
	if err := store.ValidateAttachment(containerID, ifName); err != nil {
		return "", "", fmt.Errorf("%s %s/%s: %w", op, containerID, ifName, err)
	}
	return containerID + "/" + ifName, s.attachPrefix(containerID, ifName), nil
}

// releaseChunk is how many addresses one release transaction carries: a
// compare and two deletes each, under etcd's limit on operations.
const releaseChunk = maxTxnOps / 2

// indexEntry is an index key of an attachment and the address it names.
type indexEntry struct {
	kv *mvccKV
	ip netip.Addr
}

// ReleaseByID removes the attachment's leases through its index keys, a
// chunk of releaseChunk addresses per transaction: an attachment holds one
// address per range set, and nothing bounds their number. A lease whose
// create revision equals its index key's was written with it in one
// transaction and so is the attachment's: the common case takes one read
// and one transaction. Otherwise (a lease re-indexed by fsck) the chunk's
// leases are read and those the attachment holds are deleted. Keys under
// the attachment's prefix that are not index keys are not maclan's and
// stay. Each chunk released deletes its index keys, so the loop ends: at
// most one round per chunk, and five rounds lost to concurrent changes.
func (s *Store) ReleaseByID(ctx context.Context, containerID, ifName string) ([]netip.Addr, error) {
	subject, _, err := s.attachment("release", containerID, ifName)
	if err != nil {
		return nil, err
	}
	var released []netip.Addr
	for lost := 0; lost < 5; { // a concurrent change of the same keys is rare; retry a few times
		index, err := s.readIndex(ctx, containerID, ifName)
		if err != nil {
			return nil, fmt.Errorf("release %s: %w", subject, err)
		}
		if len(index) == 0 {
			return released, nil
		}
		chunk := index[:min(len(index), releaseChunk)]
		ips, done, err := s.releaseFast(ctx, chunk)
		if err == nil && !done {
			ips, done, err = s.releaseSlow(ctx, containerID, ifName, chunk)
		}
		if err != nil {
			return nil, fmt.Errorf("release %s: %w", subject, err)
		}
		if !done {
			lost++
			continue
		}
		for _, e := range chunk {
			delete(s.pending, string(e.kv.Key))
		}
		for _, ip := range ips {
			delete(s.pending, s.leaseKey(ip))
		}
		released = append(released, ips...)
	}
	return nil, fmt.Errorf("release %s: the index kept changing under us: %w", subject, store.ErrUnavailable)
}

// readIndex reads the index keys of an attachment, all at one revision,
// leaving out keys under its prefix that are not index keys.
func (s *Store) readIndex(ctx context.Context, containerID, ifName string) ([]indexEntry, error) {
	prefix := s.attachPrefix(containerID, ifName)
	kvs, _, err := s.rangeAll(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var index []indexEntry
	for _, kv := range kvs {
		if ip, ok := parseAddrKey(strings.TrimPrefix(string(kv.Key), prefix)); ok {
			index = append(index, indexEntry{kv, ip})
		}
	}
	return index, nil
}

// releaseFast deletes the index keys and the leases written with them, if
// every lease still has its index key's create revision.
func (s *Store) releaseFast(ctx context.Context, chunk []indexEntry) ([]netip.Addr, bool, error) {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	ips := make([]netip.Addr, 0, len(chunk))
	for _, e := range chunk {
		lk := s.leaseKey(e.ip)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(lk), "=", e.kv.CreateRevision))
		ops = append(ops, clientv3.OpDelete(string(e.kv.Key)), clientv3.OpDelete(lk))
		ips = append(ips, e.ip)
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.cli.Txn(rctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return nil, false, s.unavailable("release", err)
	}
	return ips, resp.Succeeded, nil
}

// releaseSlow reads the leases the chunk names and deletes, with the
// chunk's index keys, those the attachment holds, if none changed since
// read.
func (s *Store) releaseSlow(ctx context.Context, containerID, ifName string, chunk []indexEntry) ([]netip.Addr, bool, error) {
	named := make([]netip.Addr, len(chunk))
	for i, e := range chunk {
		named[i] = e.ip
	}
	kvs, err := s.getLeases(ctx, named)
	if err != nil {
		return nil, false, err
	}
	var ips []netip.Addr
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for i, kv := range kvs {
		lk := s.leaseKey(named[i])
		ops = append(ops, clientv3.OpDelete(string(chunk[i].kv.Key)))
		if kv == nil {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(lk), "=", 0))
			continue
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(lk), "=", kv.ModRevision))
		if l, err := decodeLease(named[i], kv.Value); err == nil && l.ContainerID == containerID && l.IfName == ifName {
			ips = append(ips, named[i])
			ops = append(ops, clientv3.OpDelete(lk))
		} // someone else's, or damaged (left for fsck)
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.cli.Txn(rctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return nil, false, s.unavailable("release", err)
	}
	return ips, resp.Succeeded, nil
}

// getLeases reads the lease keys of ips, nil where a lease is absent: in
// transactions of at most maxTxnOps reads, all at the revision of the
// first.
func (s *Store) getLeases(ctx context.Context, ips []netip.Addr) ([]*mvccKV, error) {
	out := make([]*mvccKV, 0, len(ips))
	rev := int64(0)
	for len(out) < len(ips) {
		part := ips[len(out):min(len(ips), len(out)+maxTxnOps)]
		gets := make([]clientv3.Op, len(part))
		for i, ip := range part {
			gets[i] = clientv3.OpGet(s.leaseKey(ip), clientv3.WithRev(rev))
		}
		rctx, cancel := s.request(ctx)
		resp, err := s.cli.Txn(rctx).Then(gets...).Commit()
		cancel()
		if err != nil {
			return nil, s.unavailable("read leases", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, r := range resp.Responses {
			var kv *mvccKV
			if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
				kv = kvs[0]
			}
			out = append(out, kv)
		}
	}
	return out, nil
}

// Get returns the lease of ip.
func (s *Store) Get(ctx context.Context, ip netip.Addr) (store.Lease, error) {
	if err := s.requireLock("get"); err != nil {
		return store.Lease{}, err
	}
	if !validAddr(ip) {
		return store.Lease{}, fmt.Errorf("get %s: not a plain unicast address", ip)
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.leaseKey(ip))
	if err != nil {
		return store.Lease{}, s.unavailable("get "+ip.String(), err)
	}
	if len(resp.Kvs) == 0 {
		return store.Lease{}, fmt.Errorf("lease %s: %w", ip, store.ErrNotFound)
	}
	return decodeLease(ip, resp.Kvs[0].Value)
}

// GetByID returns the leases of an attachment: a prefix read of its
// index keys and a read of the leases they name. Keys of the attachment
// that a call which died left uncommitted are adopted: this section makes
// them permanent.
func (s *Store) GetByID(ctx context.Context, containerID, ifName string) ([]store.Lease, error) {
	subject, _, err := s.attachment("get", containerID, ifName)
	if err != nil {
		return nil, err
	}
	index, err := s.readIndex(ctx, containerID, ifName)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", subject, err)
	}
	if len(index) == 0 {
		return nil, nil
	}
	ips := make([]netip.Addr, len(index))
	for i, e := range index {
		ips[i] = e.ip
	}
	kvs, err := s.getLeases(ctx, ips)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", subject, err)
	}
	var leases []store.Lease
	for i, kv := range kvs {
		if kv == nil {
			continue // a stale index key (fsck reports it)
		}
		l, err := decodeLease(ips[i], kv.Value)
		if err != nil {
			return nil, err
		}
		if l.ContainerID != containerID || l.IfName != ifName {
			continue
		}
		leases = append(leases, l)
		if kv.Lease != 0 && clientv3.LeaseID(kv.Lease) != s.sectionLease {
			ik := string(index[i].kv.Key)
			s.pending[string(kv.Key)], s.pending[ik] = clientv3.LeaseID(kv.Lease), clientv3.LeaseID(index[i].kv.Lease)
			s.records[string(kv.Key)] = record{value: string(kv.Value), index: ik}
		}
	}
	return leases, nil
}
