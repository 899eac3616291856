// Package storetest is the conformance suite that every store.Store backend
// runs from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) func() store.Store { ... })
//	}
//
// newBackend is called once per subtest and returns an opener; every call
// of the opener returns a new handle on the same, initially empty, store
// (the lock and concurrency tests need several handles). Handles are closed
// by the suite.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// Run runs the suite.
func Run(t *testing.T, newBackend func(t *testing.T) func() store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open func() store.Store)
	}{
		{"reserve and get", testReserveGet},
		{"conflict record round trip", testConflict},
		{"lifecycle fields round trip", testLifecycleFields},
		{"reserve taken address", testReserveTaken},
		{"reserve rejects unsafe names", testUnsafeNames},
		{"get by attachment", testGetByID},
		{"release by attachment", testReleaseByID},
		{"release by address", testRelease},
		{"next free", testNextFree},
		{"next free across chunk boundaries", testNextFreeWide},
		{"cursor", testCursor},
		{"list", testList},
		{"methods need the lock", testNeedLock},
		{"lock times out", testLockTimeout},
		{"concurrent reserve and release", testConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			open := newBackend(t)
			tt.fn(t, func() store.Store {
				s := open()
				t.Cleanup(func() { _ = s.Close() }) // a close error after the test says nothing about it
				return s
			})
		})
	}
}

var ctx = context.Background()

func lease(ip, id, ifName string) store.Lease {
	return store.Lease{IP: netip.MustParseAddr(ip), ContainerID: id, IfName: ifName, Created: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)}
}

// locked runs fn under the lock and fails the test on any error.
func locked(t *testing.T, s store.Store, fn func() error) {
	t.Helper()
	if err := store.WithLock(ctx, s, fn); err != nil {
		t.Fatal(err)
	}
}

func mustReserve(t *testing.T, s store.Store, ls ...store.Lease) {
	t.Helper()
	locked(t, s, func() error {
		for _, l := range ls {
			if err := s.Reserve(ctx, l); err != nil {
				return err
			}
		}
		return nil
	})
}

func sameLease(a, b store.Lease) bool {
	return a.IP == b.IP && a.ContainerID == b.ContainerID && a.IfName == b.IfName && a.Created.Equal(b.Created) &&
		a.Conflict == b.Conflict
}

func testReserveGet(t *testing.T, open func() store.Store) {
	s := open()
	want := lease("10.0.0.2", "c1", "eth0")
	mustReserve(t, s, want)
	locked(t, s, func() error {
		got, err := s.Get(ctx, want.IP)
		if err != nil {
			return err
		}
		if !sameLease(got, want) {
			t.Errorf("Get = %+v, want %+v", got, want)
		}
		if _, err := s.Get(ctx, netip.MustParseAddr("10.0.0.3")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get of a free address: got %v, want ErrNotFound", err)
		}
		return nil
	})
	// A second handle sees the same lease.
	s2 := open()
	locked(t, s2, func() error {
		got, err := s2.GetByID(ctx, "c1", "eth0")
		if err == nil && (len(got) != 1 || !sameLease(got[0], want)) {
			t.Errorf("GetByID through a second handle = %+v, want [%+v]", got, want)
		}
		return err
	})
}

func testConflict(t *testing.T, open func() store.Store) {
	s := open()
	want := lease("10.0.0.9", "conflict", "lan")
	want.Conflict = "02:00:5e:10:00:01"
	mustReserve(t, s, want)
	locked(t, s, func() error {
		got, err := s.Get(ctx, want.IP)
		if err != nil {
			return err
		}
		if !sameLease(got, want) {
			t.Errorf("Get = %+v, want %+v", got, want)
		}
		all, err := s.List(ctx)
		if err != nil {
			return err
		}
		if len(all) != 1 || !sameLease(all[0], want) {
			t.Errorf("List = %+v, want [%+v]", all, want)
		}
		return nil
	})
}

func testReserveTaken(t *testing.T, open func() store.Store) {
	s := open()
	mustReserve(t, s, lease("10.0.0.2", "c1", "eth0"))
	locked(t, s, func() error {
		for _, l := range []store.Lease{lease("10.0.0.2", "c2", "eth0"), lease("10.0.0.2", "c1", "eth0")} {
			if err := s.Reserve(ctx, l); !errors.Is(err, store.ErrReserved) {
				t.Errorf("Reserve(%s by %s) = %v, want ErrReserved", l.IP, l.ContainerID, err)
			}
		}
		got, err := s.GetByID(ctx, "c1", "eth0")
		if err != nil {
			return err
		}
		if len(got) != 1 || got[0].IP != netip.MustParseAddr("10.0.0.2") {
			t.Errorf("GetByID(c1) after a failed double reserve = %v, want the one lease", got)
		}
		if got, _ := s.GetByID(ctx, "c2", "eth0"); len(got) != 0 {
			t.Errorf("GetByID(c2) = %v, want none", got)
		}
		return nil
	})
}

func testUnsafeNames(t *testing.T, open func() store.Store) {
	s := open()
	bad := []store.Lease{
		lease("10.0.0.2", "../../etc", "eth0"),
		lease("10.0.0.2", "a/b", "eth0"),
		lease("10.0.0.2", "..", "eth0"),
		lease("10.0.0.2", "", "eth0"),
		lease("10.0.0.2", "a\x00b", "eth0"),
		lease("10.0.0.2", string(make([]byte, 300)), "eth0"),
		lease("10.0.0.2", "c1", "../x"),
		lease("10.0.0.2", "c1", ".."),
		lease("10.0.0.2", "c1", "eth0/1"),
		lease("10.0.0.2", "c1", "averyveryverylongname"),
		lease("10.0.0.2", "c1", ""),
	}
	locked(t, s, func() error {
		for _, l := range bad {
			if err := s.Reserve(ctx, l); err == nil || errors.Is(err, store.ErrReserved) {
				t.Errorf("Reserve(%q, %q) = %v, want a validation error", l.ContainerID, l.IfName, err)
			}
		}
		if _, err := s.ReleaseByID(ctx, "../x", "eth0"); err == nil {
			t.Errorf("ReleaseByID(../x) succeeded, want a validation error")
		}
		leases, err := s.List(ctx)
		if err != nil || len(leases) != 0 {
			t.Errorf("List after rejected reserves = %v, %v; want none", leases, err)
		}
		return nil
	})
}

func testGetByID(t *testing.T, open func() store.Store) {
	s := open()
	mustReserve(t, s, lease("10.0.0.2", "c1", "eth0"), lease("fd00::2", "c1", "eth0"), lease("10.0.0.3", "c1", "net1"), lease("10.0.0.4", "c2", "eth0"))
	locked(t, s, func() error {
		got, err := s.GetByID(ctx, "c1", "eth0")
		if err != nil {
			return err
		}
		ips := leaseIPs(got)
		if want := []string{"10.0.0.2", "fd00::2"}; !slices.Equal(ips, want) {
			t.Errorf("GetByID(c1, eth0) = %v, want %v", ips, want)
		}
		if got, err := s.GetByID(ctx, "nobody", "eth0"); err != nil || len(got) != 0 {
			t.Errorf("GetByID(unknown) = %v, %v; want none, nil", got, err)
		}
		return nil
	})
}

func leaseIPs(ls []store.Lease) []string {
	var ips []string
	for _, l := range ls {
		ips = append(ips, l.IP.String())
	}
	slices.Sort(ips)
	return ips
}

func addrStrings(as []netip.Addr) []string {
	var ips []string
	for _, a := range as {
		ips = append(ips, a.String())
	}
	slices.Sort(ips)
	return ips
}

func testReleaseByID(t *testing.T, open func() store.Store) {
	s := open()
	mustReserve(t, s, lease("10.0.0.2", "c1", "eth0"), lease("fd00::2", "c1", "eth0"), lease("10.0.0.3", "c2", "eth0"))
	locked(t, s, func() error {
		got, err := s.ReleaseByID(ctx, "c1", "eth0")
		if err != nil {
			return err
		}
		if want := []string{"10.0.0.2", "fd00::2"}; !slices.Equal(addrStrings(got), want) {
			t.Errorf("ReleaseByID = %v, want %v", got, want)
		}
		if _, err := s.Get(ctx, netip.MustParseAddr("10.0.0.2")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get after release = %v, want ErrNotFound", err)
		}
		if _, err := s.Get(ctx, netip.MustParseAddr("10.0.0.3")); err != nil {
			t.Errorf("Get of another attachment's lease after release = %v", err)
		}
		again, err := s.ReleaseByID(ctx, "c1", "eth0")
		if err != nil || again != nil {
			t.Errorf("second ReleaseByID = %v, %v; want nil, nil", again, err)
		}
		free, err := s.NextFree(ctx, netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.9"))
		if err != nil || free != netip.MustParseAddr("10.0.0.2") {
			t.Errorf("NextFree after release = %v, %v; want 10.0.0.2", free, err)
		}
		return nil
	})
}

func testRelease(t *testing.T, open func() store.Store) {
	s := open()
	mustReserve(t, s, lease("10.0.0.2", "c1", "eth0"), lease("10.0.0.3", "c1", "eth0"))
	locked(t, s, func() error {
		if err := s.Release(ctx, netip.MustParseAddr("10.0.0.2")); err != nil {
			return err
		}
		if err := s.Release(ctx, netip.MustParseAddr("10.0.0.2")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second Release = %v, want ErrNotFound", err)
		}
		got, err := s.GetByID(ctx, "c1", "eth0")
		if err != nil {
			return err
		}
		if want := []string{"10.0.0.3"}; !slices.Equal(leaseIPs(got), want) {
			t.Errorf("GetByID after Release = %v, want %v", leaseIPs(got), want)
		}
		// The released address can be taken by someone else.
		return s.Reserve(ctx, lease("10.0.0.2", "c2", "eth0"))
	})
}

func testNextFree(t *testing.T, open func() store.Store) {
	s := open()
	mustReserve(t, s, lease("10.0.0.1", "c1", "eth0"), lease("10.0.0.2", "c2", "eth0"), lease("10.0.0.4", "c3", "eth0"), lease("fd00::1", "c1", "eth0"))
	ip := netip.MustParseAddr
	tests := []struct {
		from, to string
		want     string // "" = ErrNotFound
	}{
		{"10.0.0.1", "10.0.0.9", "10.0.0.3"},
		{"10.0.0.4", "10.0.0.9", "10.0.0.5"},
		{"10.0.0.1", "10.0.0.2", ""},
		{"10.0.0.3", "10.0.0.3", "10.0.0.3"},
		{"fd00::1", "fd00::ff", "fd00::2"},
		{"fd00::1", "fd00::1", ""},
	}
	locked(t, s, func() error {
		for _, tt := range tests {
			got, err := s.NextFree(ctx, ip(tt.from), ip(tt.to))
			switch {
			case tt.want == "" && !errors.Is(err, store.ErrNotFound):
				t.Errorf("NextFree(%s, %s) = %v, %v; want ErrNotFound", tt.from, tt.to, got, err)
			case tt.want != "" && (err != nil || got != ip(tt.want)):
				t.Errorf("NextFree(%s, %s) = %v, %v; want %s", tt.from, tt.to, got, err, tt.want)
			}
		}
		return nil
	})
}

// testNextFreeWide fills 300 addresses straddling a 65,536-address
// boundary, which a chunked bitmap must cross.
func testNextFreeWide(t *testing.T, open func() store.Store) {
	s := open()
	start := netip.MustParseAddr("10.0.255.100")
	a := start
	locked(t, s, func() error {
		for i := range 300 {
			if err := s.Reserve(ctx, store.Lease{IP: a, ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0"}); err != nil {
				return err
			}
			a = a.Next()
		}
		got, err := s.NextFree(ctx, start, netip.MustParseAddr("10.3.0.0"))
		if err != nil || got != a {
			t.Errorf("NextFree over 300 leases = %v, %v; want %v", got, err, a)
		}
		if _, err := s.NextFree(ctx, start, a.Prev()); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("NextFree over a full span = %v, want ErrNotFound", err)
		}
		return nil
	})
}

func testCursor(t *testing.T, open func() store.Store) {
	s := open()
	locked(t, s, func() error {
		if c, err := s.Cursor(ctx, "0"); err != nil || c.IsValid() {
			t.Errorf("Cursor of a new store = %v, %v; want none", c, err)
		}
		if err := s.SetCursor(ctx, "0", netip.MustParseAddr("10.0.0.7")); err != nil {
			return err
		}
		if err := s.SetCursor(ctx, "1", netip.MustParseAddr("fd00::7")); err != nil {
			return err
		}
		return nil
	})
	s2 := open()
	locked(t, s2, func() error {
		for set, want := range map[string]string{"0": "10.0.0.7", "1": "fd00::7"} {
			if c, err := s2.Cursor(ctx, set); err != nil || c != netip.MustParseAddr(want) {
				t.Errorf("Cursor(%s) = %v, %v; want %s", set, c, err, want)
			}
		}
		return nil
	})
}

func testList(t *testing.T, open func() store.Store) {
	s := open()
	want := []store.Lease{lease("10.0.0.2", "c1", "eth0"), lease("10.0.0.3", "c2", "eth0"), lease("fd00::2", "c1", "eth0")}
	mustReserve(t, s, want...)
	locked(t, s, func() error {
		got, err := s.List(ctx)
		if err != nil {
			return err
		}
		if len(got) != len(want) {
			t.Fatalf("List = %v, want %v", got, want)
		}
		for _, w := range want {
			if !slices.ContainsFunc(got, func(g store.Lease) bool { return sameLease(g, w) }) {
				t.Errorf("List lacks %+v", w)
			}
		}
		return nil
	})
}

func testNeedLock(t *testing.T, open func() store.Store) {
	s := open()
	ip := netip.MustParseAddr("10.0.0.2")
	calls := map[string]func() error{
		"Reserve":     func() error { return s.Reserve(ctx, lease("10.0.0.2", "c1", "eth0")) },
		"Release":     func() error { return s.Release(ctx, ip) },
		"ReleaseByID": func() error { _, err := s.ReleaseByID(ctx, "c1", "eth0"); return err },
		"Get":         func() error { _, err := s.Get(ctx, ip); return err },
		"GetByID":     func() error { _, err := s.GetByID(ctx, "c1", "eth0"); return err },
		"NextFree":    func() error { _, err := s.NextFree(ctx, ip, ip); return err },
		"List":        func() error { _, err := s.List(ctx); return err },
		"SetCursor":   func() error { return s.SetCursor(ctx, "0", ip) },
		"Unlock":      s.Unlock,
	}
	for name, call := range calls {
		if err := call(); err == nil {
			t.Errorf("%s without the lock succeeded", name)
		}
	}
}

func testLockTimeout(t *testing.T, open func() store.Store) {
	a, b := open(), open()
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := b.Lock(c)
	if !errors.Is(err, store.ErrLockTimeout) {
		t.Errorf("Lock while held = %v, want ErrLockTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Lock took %v to give up, want about 200ms", d)
	}
	if err := a.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := b.Lock(ctx); err != nil {
		t.Fatalf("Lock after release = %v", err)
	}
	if err := b.Unlock(); err != nil {
		t.Fatal(err)
	}
}

// testConcurrent: 32 handles reserve the next free address at once and all
// get distinct ones; then they release concurrently and the store is empty.
func testConcurrent(t *testing.T, open func() store.Store) {
	const n = 32
	from, to := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.62")
	handles := make([]store.Store, n)
	for i := range handles {
		handles[i] = open()
	}
	got := make([]netip.Addr, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, s := range handles {
		wg.Go(func() {
			errs[i] = store.WithLock(ctx, s, func() error {
				ip, err := s.NextFree(ctx, from, to)
				if err != nil {
					return err
				}
				got[i] = ip
				return s.Reserve(ctx, store.Lease{IP: ip, ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0", Created: time.Now()})
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]bool{}
	for _, ip := range got {
		if seen[ip] {
			t.Errorf("address %s handed out twice", ip)
		}
		seen[ip] = true
	}
	for i, s := range handles {
		wg.Go(func() {
			errs[i] = store.WithLock(ctx, s, func() error {
				ips, err := s.ReleaseByID(ctx, fmt.Sprintf("c%d", i), "eth0")
				if err == nil && len(ips) != 1 {
					err = fmt.Errorf("c%d released %v, want one address", i, ips)
				}
				return err
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	s := open()
	locked(t, s, func() error {
		leases, err := s.List(ctx)
		if len(leases) != 0 {
			t.Errorf("List after all releases = %v", leases)
		}
		return err
	})
}

// testLifecycleFields: the host, boot, netns, workload and sticky release
// time of a lease come back as written (docs/ipam.md, "Lease lifecycle"),
// and a lease whose text JSON cannot carry back is refused.
func testLifecycleFields(t *testing.T, open func() store.Store) {
	s := open()
	want := lease("10.0.0.2", "c1", "eth0")
	want.Host, want.Boot, want.Netns = "h1", "b1", "/run/netns/c1"
	want.Workload, want.WorkloadUID = "k8s/shop/web-0", "uid-1"
	want.Released = time.Date(2025, 1, 2, 3, 5, 0, 7, time.UTC)
	mustReserve(t, s, want)
	locked(t, s, func() error {
		got, err := s.Get(ctx, want.IP)
		if err != nil {
			return err
		}
		if !sameLease(got, want) || got.Host != want.Host || got.Boot != want.Boot || got.Netns != want.Netns ||
			got.Workload != want.Workload || got.WorkloadUID != want.WorkloadUID || !got.Released.Equal(want.Released) {
			t.Errorf("Get = %+v, want %+v", got, want)
		}
		bad := lease("10.0.0.3", "c2", "eth0")
		bad.Netns = "/run/netns/\xff"
		if err := s.Reserve(ctx, bad); err == nil {
			t.Error("Reserve of a lease with invalid UTF-8 succeeded")
		}
		return nil
	})
}
