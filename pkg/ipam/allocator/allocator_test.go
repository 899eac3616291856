package allocator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/iprange"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/disk"
	"github.com/maclan-cni/maclan/pkg/ipam/store/memstore"
)

var ctx = context.Background()

// newStore is an empty store in memory: the allocator's tests that are not
// about the disk store run on it.
func newStore(t *testing.T) store.Store {
	t.Helper()
	s := memstore.New().Open()
	t.Cleanup(func() { _ = s.Close() }) // nothing to check after the test
	return s
}

// newDiskStore is an empty disk store and its directory, for the tests
// that look at or damage its files.
func newDiskStore(t *testing.T) (*disk.Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := disk.New(dir, "net1", disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() }) // nothing to check after the test
	return s, filepath.Join(dir, "net1")
}

func sets(t *testing.T, specs ...[]iprange.Range) []iprange.RangeSet {
	t.Helper()
	var out []iprange.RangeSet
	for _, s := range specs {
		set := iprange.RangeSet(s)
		if err := set.Canonicalize(); err != nil {
			t.Fatal(err)
		}
		out = append(out, set)
	}
	return out
}

func subnet(s string) []iprange.Range { return []iprange.Range{{Subnet: netip.MustParsePrefix(s)}} }

func ips(allocs []Allocation) []string {
	var out []string
	for _, a := range allocs {
		out = append(out, a.IP.String())
	}
	return out
}

func mustAllocate(t *testing.T, a *Allocator, id string, requested ...netip.Addr) []string {
	t.Helper()
	got, err := a.Allocate(ctx, id, "eth0", requested)
	if err != nil {
		t.Fatalf("Allocate(%s): %v", id, err)
	}
	return ips(got)
}

func leaseCount(t *testing.T, s store.Store) int {
	t.Helper()
	var n int
	if err := store.WithLock(ctx, s, func() error {
		ls, err := s.List(ctx)
		n = len(ls)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRoundRobinDoesNotReuseReleased(t *testing.T) {
	s := newStore(t)
	a := New(s, sets(t, subnet("10.0.0.0/29")), Options{}) // .2-.6 usable; .1 is the gateway
	if got := mustAllocate(t, a, "a"); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Fatalf("first: got %v, want 10.0.0.2", got)
	}
	if got := mustAllocate(t, a, "b"); !slices.Equal(got, []string{"10.0.0.3"}) {
		t.Fatalf("second: got %v, want 10.0.0.3", got)
	}
	if _, err := a.Release(ctx, "a", "eth0"); err != nil {
		t.Fatal(err)
	}
	if got := mustAllocate(t, a, "c"); !slices.Equal(got, []string{"10.0.0.4"}) {
		t.Errorf("after releasing .2: got %v, want 10.0.0.4 (no reuse while others are free)", got)
	}
	mustAllocate(t, a, "d")
	mustAllocate(t, a, "e")
	// The walk wraps around to the released address.
	if got := mustAllocate(t, a, "f"); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Errorf("wrapped: got %v, want 10.0.0.2", got)
	}
}

func TestExhaustionLeaksNothing(t *testing.T) {
	s, dir := newDiskStore(t)
	a := New(s, sets(t, subnet("10.0.0.0/29")), Options{})
	for i := range 5 {
		mustAllocate(t, a, fmt.Sprintf("c%d", i))
	}
	_, err := a.Allocate(ctx, "late", "eth0", nil)
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("got %v, want ErrExhausted", err)
	}
	if n := leaseCount(t, s); n != 5 {
		t.Errorf("got %d leases, want 5", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "attach", "late=eth0")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed ADD left an index entry: %v", err)
	}
	if err := a.Available(ctx); !errors.Is(err, ErrExhausted) {
		t.Errorf("Available on a full set: got %v, want ErrExhausted", err)
	}
}

func TestDualStackAllOrNothing(t *testing.T) {
	s := newStore(t)
	full := New(s, sets(t, subnet("10.0.0.0/30")), Options{}) // one usable address: .2
	mustAllocate(t, full, "holder")
	a := New(s, sets(t, subnet("fd00::/120"), subnet("10.0.0.0/30")), Options{})
	if _, err := a.Allocate(ctx, "c1", "eth0", nil); !errors.Is(err, ErrExhausted) {
		t.Fatalf("got %v, want ErrExhausted", err)
	}
	if n := leaseCount(t, s); n != 1 {
		t.Errorf("got %d leases after a failed dual-stack ADD, want only the holder's", n)
	}
}

func TestAllocateIsIdempotent(t *testing.T) {
	s := newStore(t)
	a := New(s, sets(t, subnet("10.0.0.0/24"), subnet("fd00::/64")), Options{})
	first := mustAllocate(t, a, "c1")
	again := mustAllocate(t, a, "c1")
	if !slices.Equal(first, again) || len(first) != 2 {
		t.Errorf("got %v then %v, want the same two addresses", first, again)
	}
	if n := leaseCount(t, s); n != 2 {
		t.Errorf("got %d leases, want 2", n)
	}
}

// On the disk store, whose ErrReserved names the holder.
func TestStaticRequests(t *testing.T) {
	s, _ := newDiskStore(t)
	a := New(s, sets(t, subnet("10.0.0.0/24"), subnet("fd00::/64")), Options{})
	want := netip.MustParseAddr("10.0.0.77")
	got := mustAllocate(t, a, "c1", want)
	if got[0] != "10.0.0.77" || got[1] != "fd00::2" {
		t.Errorf("got %v, want 10.0.0.77 and a dynamic v6", got)
	}
	_, err := a.Allocate(ctx, "c2", "eth0", []netip.Addr{want})
	if !errors.Is(err, store.ErrReserved) {
		t.Fatalf("requesting a held address: got %v, want ErrReserved", err)
	}
	if msg := err.Error(); !contains(msg, "10.0.0.77") || !contains(msg, "c1") {
		t.Errorf("error %q should name the address and its holder", msg)
	}
	if n := leaseCount(t, s); n != 2 {
		t.Errorf("got %d leases, want 2 (c2's v6 rolled back or never taken)", n)
	}
	if _, err := a.Allocate(ctx, "c1", "eth0", []netip.Addr{netip.MustParseAddr("10.0.0.78")}); err == nil {
		t.Errorf("re-ADD asking for a different address than held: got success, want an error")
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestExclusionsAndMultipleRanges(t *testing.T) {
	s := newStore(t)
	set := sets(t, []iprange.Range{
		{Subnet: netip.MustParsePrefix("10.0.0.0/24"), RangeStart: netip.MustParseAddr("10.0.0.2"), RangeEnd: netip.MustParseAddr("10.0.0.9")},
		{Subnet: netip.MustParsePrefix("10.0.1.0/24"), RangeStart: netip.MustParseAddr("10.0.1.250")},
	})
	a := New(s, set, Options{Exclude: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/29"), netip.MustParsePrefix("10.0.1.252/32")}})
	var got []string
	for i := range 6 {
		got = append(got, mustAllocate(t, a, fmt.Sprintf("c%d", i))...)
	}
	want := []string{"10.0.0.8", "10.0.0.9", "10.0.1.250", "10.0.1.251", "10.0.1.253", "10.0.1.254"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, err := a.Allocate(ctx, "c9", "eth0", nil); !errors.Is(err, ErrExhausted) {
		t.Errorf("got %v, want ErrExhausted (.254 is the last host, .255 the broadcast)", err)
	}
}

// A lease whose bitmap bit was lost (a crash between the two writes, or a
// deleted bitmap) is skipped, not handed out twice.
func TestStaleBitmapIsHarmless(t *testing.T) {
	s, dir := newDiskStore(t)
	a := New(s, sets(t, subnet("10.0.0.0/24")), Options{})
	for i := range 3 {
		mustAllocate(t, a, fmt.Sprintf("c%d", i))
	}
	if err := os.RemoveAll(filepath.Join(dir, "bitmap")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "bitmap"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "cursor")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "cursor"), 0o700); err != nil {
		t.Fatal(err)
	}
	if got := mustAllocate(t, a, "new"); !slices.Equal(got, []string{"10.0.0.5"}) {
		t.Errorf("got %v, want 10.0.0.5", got)
	}
}

func TestCheck(t *testing.T) {
	s := newStore(t)
	a := New(s, sets(t, subnet("10.0.0.0/24"), subnet("fd00::/64")), Options{})
	mustAllocate(t, a, "c1")
	if _, err := a.Check(ctx, "c1", "eth0"); err != nil {
		t.Errorf("Check after ADD: %v", err)
	}
	if err := store.WithLock(ctx, s, func() error { return s.Release(ctx, netip.MustParseAddr("fd00::2")) }); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Check(ctx, "c1", "eth0"); err == nil {
		t.Errorf("Check with the v6 lease gone: got success, want an error")
	}
	if _, err := a.Check(ctx, "nobody", "eth0"); err == nil {
		t.Errorf("Check of an unknown attachment: got success, want an error")
	}
}

func TestGC(t *testing.T) {
	s := newStore(t)
	a := New(s, sets(t, subnet("10.0.0.0/24")), Options{})
	for _, id := range []string{"keep", "drop1", "drop2"} {
		mustAllocate(t, a, id)
	}
	gone, err := a.GC(ctx, []Attachment{{ContainerID: "keep", IfName: "eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(gone) != 2 {
		t.Errorf("GC released %v, want drop1's and drop2's", gone)
	}
	if n := leaseCount(t, s); n != 1 {
		t.Errorf("got %d leases after GC, want 1", n)
	}
	gone, err = a.GC(ctx, nil)
	if err != nil || len(gone) != 1 {
		t.Errorf("GC with an empty list: got %v, %v; want keep's lease released", gone, err)
	}
}

// ADD must not walk the leases in its way: with 20,000 leases right after
// the cursor's position, the walk reads a bitmap chunk, not 20,000 files.
func TestAllocateSkipsDenseBlockQuickly(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 20,000 leases")
	}
	s, dir := newDiskStore(t)
	a := New(s, sets(t, subnet("10.64.0.0/16")), Options{})
	mustAllocate(t, a, "first") // 10.64.0.2
	// Fill the next 20,000 addresses.
	var leases []store.Lease
	ip := netip.MustParseAddr("10.64.0.3")
	for i := range 20000 {
		leases = append(leases, store.Lease{IP: ip, ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0"})
		ip = ip.Next()
	}
	if err := store.WithLock(ctx, s, func() error { _, err := s.Import(ctx, leases); return err }); err != nil {
		t.Fatal(err)
	}
	_ = dir
	start := time.Now()
	got := mustAllocate(t, a, "next")
	if want := netip.MustParseAddr("10.64.0.3"); true {
		// 10.64.0.3 + 20000 = 10.64.78.35
		want = netip.MustParseAddr("10.64.78.35")
		if got[0] != want.String() {
			t.Errorf("got %v, want %s", got, want)
		}
	}
	// Generous: a walk that stat()ed every lease would take far longer.
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("ADD past 20,000 leases took %v", d)
	}
}

func TestConflictRecordIsSkippedAndSurvivesGC(t *testing.T) {
	st := newStore(t)
	a := New(st, sets(t, subnet("10.1.0.0/29")), Options{})
	first, err := a.Allocate(ctx, "c1", "eth0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !first[0].Fresh {
		t.Errorf("first Allocate: Fresh = false, want true")
	}
	again, err := a.Allocate(ctx, "c1", "eth0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if again[0].Fresh || again[0].IP != first[0].IP {
		t.Errorf("repeated Allocate = %+v, want the held %s with Fresh false", again[0], first[0].IP)
	}

	// The address answers on the LAN: it becomes a conflict record.
	if err := a.MarkConflict(ctx, first[0].IP, "02:00:00:00:00:99", "c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	next, err := a.Allocate(ctx, "c1", "eth0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if next[0].IP == first[0].IP || !next[0].Fresh {
		t.Errorf("Allocate after the conflict = %+v, want a fresh address other than %s", next[0], first[0].IP)
	}

	// GC with no valid attachment releases c1 but keeps the conflict.
	if _, err := a.GC(ctx, []Attachment{}); err != nil {
		t.Fatal(err)
	}
	err = store.WithLock(ctx, st, func() error {
		l, err := st.Get(ctx, first[0].IP)
		if err != nil {
			return err
		}
		if l.Conflict != "02:00:00:00:00:99" || l.ContainerID != ConflictContainerID {
			t.Errorf("conflict record after GC = %+v", l)
		}
		if _, err := st.Get(ctx, next[0].IP); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("c1's lease after GC: got %v, want ErrNotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestMarkConflictLeavesOthersLeases(t *testing.T) {
	st := newStore(t)
	a := New(st, sets(t, subnet("10.1.0.0/29")), Options{})
	got := mustAllocate(t, a, "c1")
	ip := netip.MustParseAddr(got[0])
	// c2 asks to mark c1's address: nothing changes.
	if err := a.MarkConflict(ctx, ip, "02:00:00:00:00:99", "c2", "eth0"); err != nil {
		t.Fatal(err)
	}
	err := store.WithLock(ctx, st, func() error {
		l, err := st.Get(ctx, ip)
		if err == nil && (l.ContainerID != "c1" || l.Conflict != "") {
			t.Errorf("lease after another attachment's MarkConflict = %+v, want c1's", l)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
