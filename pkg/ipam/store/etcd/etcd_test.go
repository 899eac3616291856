package etcd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/etcdtest"
	"github.com/maclan-cni/maclan/pkg/ipam/store/storetest"
)

// seq gives each test its own key prefix on the shared server.
var seq atomic.Int64

func testOptions(t *testing.T, srv *etcdtest.Server) Options {
	return Options{
		Endpoints: []string{srv.Endpoint()},
		Prefix:    fmt.Sprintf("/t%d", seq.Add(1)),
		LockDir:   t.TempDir(),
	}
}

func open(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := New("net1", opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	storetest.Run(t, func(t *testing.T) func() store.Store {
		opts := testOptions(t, srv)
		return func() store.Store { return open(t, opts) }
	})
}

var ctx = context.Background()

func lease(ip, id string) store.Lease {
	return store.Lease{IP: netip.MustParseAddr(ip), ContainerID: id, IfName: "eth0", Created: time.Now()}
}

func locked(t *testing.T, s *Store, fn func() error) {
	t.Helper()
	if err := store.WithLock(ctx, s, fn); err != nil {
		t.Fatal(err)
	}
}

func TestAddrKeyOrder(t *testing.T) {
	addrs := []string{"0.0.0.0", "9.255.255.255", "10.0.0.1", "10.0.0.2", "10.0.1.0", "255.255.255.255", "::", "::1", "fd00::1", "fd00::1:0", "ffff::"}
	for i := 1; i < len(addrs); i++ {
		a, b := netip.MustParseAddr(addrs[i-1]), netip.MustParseAddr(addrs[i])
		if ka, kb := addrKey(a), addrKey(b); ka >= kb {
			t.Errorf("key of %s (%s) does not sort before key of %s (%s)", a, ka, b, kb)
		}
		if got, ok := parseAddrKey(addrKey(b)); !ok || got != b {
			t.Errorf("parseAddrKey(addrKey(%s)) = %v, %v", b, got, ok)
		}
	}
	for _, bad := range []string{"4-0a00000", "4-0a0000001", "6-0a000001", "4-zz000001", "x", "6-00000000000000000000ffff0a000001"} {
		if got, ok := parseAddrKey(bad); ok {
			t.Errorf("parseAddrKey(%q) = %v, want failure", bad, got)
		}
	}
}

// TestUnreachable: no etcd at the endpoint gives ErrUnavailable naming it.
func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep := "http://" + l.Addr().String()
	_ = l.Close() // now nothing listens there
	_, err = New("net1", Options{Endpoints: []string{ep}, LockDir: t.TempDir(), DialTimeout: 200 * time.Millisecond})
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), ep) {
		t.Errorf("New with nothing listening = %v, want ErrUnavailable naming %s", err, ep)
	}
}

// TestEtcdLostMidCall: etcd goes away after one reservation of a call and
// comes back before its end; the call fails and keeps nothing.
func TestEtcdLostMidCall(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	opts := testOptions(t, srv)
	opts.RequestTimeout = 500 * time.Millisecond
	opts.PendingTTL = 2 * time.Second
	s := open(t, opts)
	defer s.Close() //nolint:errcheck // test
	if err := s.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(ctx, lease("10.0.0.2", "c1")); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	err := s.Reserve(ctx, lease("fd00::2", "c1"))
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), srv.Endpoint()) {
		t.Errorf("Reserve with etcd stopped = %v, want ErrUnavailable naming %s", err, srv.Endpoint())
	}
	srv.Restart()
	if err := s.Unlock(); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Unlock of a call that lost etcd = %v, want ErrUnavailable", err)
	}
	// Unlock revoked the reservation, or, if the client had not yet
	// reconnected, it expires.
	s2 := open(t, opts)
	defer s2.Close() //nolint:errcheck // test
	waitNoLeases(t, s2)
}

// waitNoLeases polls until the store holds no lease.
func waitNoLeases(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // hang guard, not a threshold
	for {
		var leases []store.Lease
		locked(t, s, func() error {
			var err error
			leases, err = s.List(ctx)
			return err
		})
		if len(leases) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("leases still there after a minute: %v", leases)
		}
		time.Sleep(100 * time.Millisecond) // polling the expiry
	}
}

// reserveAndDie reserves l and closes the store without Unlock, as a call
// killed in the middle of an ADD would.
func reserveAndDie(t *testing.T, opts Options, l store.Lease) {
	t.Helper()
	s := open(t, opts)
	if err := s.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(ctx, l); err != nil {
		t.Fatal(err)
	}
	_ = s.Close() // dies without Unlock
}

// TestDeadCallExpires: a caller that dies before Unlock leaves keys that
// etcd deletes when their TTL runs out.
func TestDeadCallExpires(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	opts := testOptions(t, srv)
	opts.PendingTTL = 2 * time.Second
	reserveAndDie(t, opts, lease("10.0.0.2", "c1"))
	s2 := open(t, opts)
	defer s2.Close() //nolint:errcheck // test
	locked(t, s2, func() error {
		rep, err := s2.Fsck(ctx, false)
		if rep.Pending != 1 || len(rep.Problems) != 0 {
			t.Errorf("fsck of an uncommitted reservation = %+v, want 1 pending and no problem", rep)
		}
		return err
	})
	waitNoLeases(t, s2)
	locked(t, s2, func() error {
		got, err := s2.GetByID(ctx, "c1", "eth0")
		if len(got) != 0 {
			t.Errorf("index after expiry = %v, want none", got)
		}
		return err
	})
}

// TestAdoptAfterDeadCall: a repeated ADD of an attachment whose first call
// died finds its reservation and makes it permanent.
func TestAdoptAfterDeadCall(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	opts := testOptions(t, srv)
	reserveAndDie(t, opts, lease("10.0.0.2", "c1"))
	s2 := open(t, opts)
	defer s2.Close() //nolint:errcheck // test
	locked(t, s2, func() error {
		got, err := s2.GetByID(ctx, "c1", "eth0")
		if len(got) != 1 {
			t.Errorf("GetByID after a dead call = %v, want its lease", got)
		}
		return err
	})
	locked(t, s2, func() error {
		rep, err := s2.Fsck(ctx, false)
		if rep.Pending != 0 || rep.Leases != 1 {
			t.Errorf("fsck after adoption = %+v, want 1 permanent lease", rep)
		}
		return err
	})
}

// TestFsck damages the keys by hand, as an etcdctl user could.
func TestFsck(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	opts := testOptions(t, srv)
	s := open(t, opts)
	defer s.Close() //nolint:errcheck // test
	locked(t, s, func() error {
		for _, l := range []store.Lease{lease("10.0.0.2", "c1"), lease("10.0.0.3", "c2"), lease("10.0.0.4", "c3")} {
			if err := s.Reserve(ctx, l); err != nil {
				return err
			}
		}
		return nil
	})
	root := s.Root()
	damage := []struct{ key, val string }{
		{root + "lease/4-0a000005", "not json"},  // corrupt lease
		{root + "attach/c9=eth0/4-0a000009", ""}, // stale index key
		{root + "junk", "x"},                     // foreign key: reported, left alone
		{root + "cursor/0", "nowhere"},           // unreadable cursor
		{root + "lease/4-0a000003", "{}"},        // c2's lease overwritten
	}
	for _, d := range damage {
		if _, err := s.cli.Put(ctx, d.key, d.val); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.cli.Delete(ctx, root+"attach/c3=eth0/4-0a000004"); err != nil { // orphan lease
		t.Fatal(err)
	}
	kinds := func(rep FsckReport) []string {
		var ks []string
		for _, p := range rep.Problems {
			ks = append(ks, p.Kind)
		}
		slices.Sort(ks)
		return ks
	}
	want := []string{"corrupt-lease", "corrupt-lease", "cursor", "foreign", "orphan-lease", "stale-index", "stale-index"}
	locked(t, s, func() error {
		rep, err := s.Fsck(ctx, true)
		if got := kinds(rep); !slices.Equal(got, want) {
			t.Errorf("fsck found %v, want %v:\n%v", got, want, rep.Problems)
		}
		return err
	})
	locked(t, s, func() error {
		rep, err := s.Fsck(ctx, false)
		if len(rep.Problems) != 1 || rep.Problems[0].Kind != "foreign" || rep.Leases != 2 {
			t.Errorf("fsck after repair = %+v, want 2 leases and the foreign key only", rep)
		}
		got, gerr := s.GetByID(ctx, "c3", "eth0")
		if len(got) != 1 {
			t.Errorf("orphan lease after repair: GetByID = %v, want it indexed", got)
		}
		return errors.Join(err, gerr)
	})
}

func TestImport(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	s := open(t, testOptions(t, srv))
	defer s.Close() //nolint:errcheck // test
	var leases []store.Lease
	a := netip.MustParseAddr("10.0.0.10")
	for i := range 120 {
		leases = append(leases, lease(a.String(), fmt.Sprintf("c%d", i)))
		a = a.Next()
	}
	locked(t, s, func() error { return s.Reserve(ctx, lease("10.0.0.70", "other")) })
	locked(t, s, func() error {
		n, err := s.Import(ctx, leases)
		if n != 119 || !errors.Is(err, store.ErrReserved) || !strings.Contains(err.Error(), "10.0.0.70") {
			t.Errorf("Import = %d, %v; want 119 and a conflict on 10.0.0.70", n, err)
		}
		n, err = s.Import(ctx, leases) // again: nothing new, same conflict
		if n != 119 || !errors.Is(err, store.ErrReserved) {
			t.Errorf("second Import = %d, %v; want 119 and the conflict", n, err)
		}
		rep, err := s.Fsck(ctx, false)
		if rep.Leases != 120 || len(rep.Problems) != 0 || rep.Pending != 0 {
			t.Errorf("fsck after import = %+v", rep)
		}
		return err
	})
}

// TestUnsureJournal: a commit whose answer was lost is noted in the
// journal; the host's next call deletes what it wrote, if etcd holds it
// unchanged, and leaves alone a lease written since.
func TestUnsureJournal(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	opts := testOptions(t, srv)
	s := open(t, opts)
	defer s.Close() //nolint:errcheck // test
	l1, l2 := lease("10.0.0.2", "c1"), lease("10.0.0.3", "c2")
	locked(t, s, func() error { return errors.Join(s.Reserve(ctx, l1), s.Reserve(ctx, l2)) })
	// As a failed commit would leave it: both noted, then 10.0.0.3 is
	// released and taken again by another attachment.
	s.records = map[string]record{
		s.leaseKey(l1.IP): {value: string(encodeLease(l1)), index: s.attachKey("c1", "eth0", l1.IP)},
		s.leaseKey(l2.IP): {value: string(encodeLease(l2)), index: s.attachKey("c2", "eth0", l2.IP)},
	}
	if err := s.noteUnsure([]string{s.leaseKey(l1.IP), s.leaseKey(l2.IP)}); err != nil {
		t.Fatal(err)
	}
	s.records = nil
	s2 := open(t, opts)
	defer s2.Close() //nolint:errcheck // test
	l3 := lease("10.0.0.3", "c3")
	if _, err := s2.cli.Put(ctx, s2.leaseKey(l3.IP), string(encodeLease(l3))); err != nil {
		t.Fatal(err)
	}
	locked(t, s2, func() error {
		leases, err := s2.List(ctx)
		if len(leases) != 1 || leases[0].ContainerID != "c3" {
			t.Errorf("leases after the journal replay = %v, want c3's only", leases)
		}
		return err
	})
	if recs, err := s2.readJournal(); err != nil || len(recs) != 0 {
		t.Errorf("journal after replay = %v, %v; want gone", recs, err)
	}
}
