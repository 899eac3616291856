package etcd

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

var _ store.Importer = (*Store)(nil)

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
