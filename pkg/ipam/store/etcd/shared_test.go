package etcd

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/etcdtest"
)

// Hosts share the store but not the lock: what a host read may have
// changed when it releases or restamps it. ReleaseIf and Restamp act only
// on the record as it was read.
func TestReleaseIfAndRestampOnlyTheRecordRead(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	opts := testOptions(t, srv)
	a, b := open(t, opts), open(t, opts)
	ctx := context.Background()
	ip := netip.MustParseAddr("10.0.0.9")
	read := store.Lease{IP: ip, ContainerID: "hold", IfName: "eth0", Created: time.Unix(1700000000, 0).UTC(), Released: time.Unix(1700000100, 0).UTC()}
	locked := func(s *Store, fn func() error) {
		t.Helper()
		if err := store.WithLock(ctx, s, fn); err != nil {
			t.Fatal(err)
		}
	}
	locked(a, func() error { return a.Reserve(ctx, read) })
	// Host B takes the address over (release, then its own lease).
	live := store.Lease{IP: ip, ContainerID: "live", IfName: "eth0", Created: time.Now().UTC()}
	locked(b, func() error {
		if err := b.Release(ctx, ip); err != nil {
			return err
		}
		return b.Reserve(ctx, live)
	})
	// Host A still acts on what it read: nothing happens.
	locked(a, func() error {
		if err := a.ReleaseIf(ctx, read); !errors.Is(err, store.ErrReserved) {
			t.Errorf("ReleaseIf of a changed record = %v, want ErrReserved", err)
		}
		stale := read
		stale.Boot = "b2"
		if err := a.Restamp(ctx, stale); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Restamp of another attachment's address = %v, want ErrNotFound", err)
		}
		got, err := a.Get(ctx, ip)
		if err != nil || got.ContainerID != "live" {
			t.Errorf("the live lease became %+v (%v)", got, err)
		}
		// The record as read now: restamped, then released.
		now := live
		now.Host, now.Boot = "h1", "b2"
		if err := a.Restamp(ctx, now); err != nil {
			t.Errorf("Restamp of the live lease: %v", err)
		}
		if got, err := a.Get(ctx, ip); err != nil || got.Boot != "b2" {
			t.Errorf("after Restamp: %+v (%v)", got, err)
		}
		if err := a.ReleaseIf(ctx, now); err != nil {
			t.Errorf("ReleaseIf of the record as read: %v", err)
		}
		if _, err := a.Get(ctx, ip); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("after ReleaseIf: %v, want ErrNotFound", err)
		}
		return nil
	})
}
