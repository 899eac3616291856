package etcd

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// CheckWritable proves that etcd can commit now: a linearizable read,
// which needs a leader and a quorum, and no NOSPACE alarm (which makes
// etcd refuse writes).
func (s *Store) CheckWritable() error {
	ctx, cancel := s.request(context.Background())
	defer cancel()
	if _, err := s.cli.Get(ctx, s.cursorKey("0"), clientv3.WithCountOnly()); err != nil {
		return s.unavailable("quorum read", err)
	}
	alarms, err := s.cli.AlarmList(ctx)
	if err != nil {
		return s.unavailable("list alarms", err)
	}
	if len(alarms.Alarms) > 0 {
		return fmt.Errorf("etcd at %s: alarm %s raised, writes refused: %w", s.Endpoints(), alarms.Alarms[0].Alarm, store.ErrUnavailable)
	}
	return nil
}
