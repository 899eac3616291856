package allocator

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/memstore"
)

func newClock() *clock { return &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

// lifecycleAllocator is an allocator over a /29 (.2-.6 free; .1 is the
// gateway) in a memory store, for host h in boot b.
func lifecycleAllocator(t *testing.T, mem *memstore.Backend, c *clock, holder store.Lease, mod func(*Options)) *Allocator {
	t.Helper()
	opts := Options{Now: c.Now, Holder: holder}
	if mod != nil {
		mod(&opts)
	}
	return New(mem.Open(), sets(t, subnet("10.0.0.0/29")), opts)
}

func held(t *testing.T, s store.Store) map[string]store.Lease {
	t.Helper()
	out := map[string]store.Lease{}
	if err := store.WithLock(ctx, s, func() error {
		ls, err := s.List(ctx)
		for _, l := range ls {
			out[l.IP.String()] = l
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLeasesRecordTheirHolder(t *testing.T) {
	mem, c := memstore.New(), newClock()
	me := store.Lease{Host: "h1", Boot: "b1", Netns: "/run/netns/c1", Workload: "k8s/ns/web-0", WorkloadUID: "u1"}
	a := lifecycleAllocator(t, mem, c, me, nil)
	mustAllocate(t, a, "c1")
	l := held(t, mem.Open())["10.0.0.2"]
	if l.Host != "h1" || l.Boot != "b1" || l.Netns != "/run/netns/c1" || l.Workload != "k8s/ns/web-0" || l.WorkloadUID != "u1" {
		t.Errorf("lease = %+v, want the holder's fields", l)
	}
}

func TestSweepEarlierBoots(t *testing.T) {
	mem, c := memstore.New(), newClock()
	old := lifecycleAllocator(t, mem, c, store.Lease{Host: "h1", Boot: "b1"}, nil)
	other := lifecycleAllocator(t, mem, c, store.Lease{Host: "h2", Boot: "b1"}, nil)
	legacy := lifecycleAllocator(t, mem, c, store.Lease{}, nil)
	mustAllocate(t, old, "c-old")       // .2: this host, earlier boot
	mustAllocate(t, other, "c-other")   // .3: another host
	mustAllocate(t, legacy, "c-legacy") // .4: written before the fields existed
	now := lifecycleAllocator(t, mem, c, store.Lease{Host: "h1", Boot: "b2"}, nil)
	mustAllocate(t, now, "c-now") // .5: this boot
	gone, err := now.SweepEarlierBoots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(gone) != 1 || gone[0].ContainerID != "c-old" {
		t.Errorf("swept %v, want only c-old's lease", gone)
	}
	left := held(t, mem.Open())
	for ip, id := range map[string]string{"10.0.0.3": "c-other", "10.0.0.4": "c-legacy", "10.0.0.5": "c-now"} {
		if left[ip].ContainerID != id {
			t.Errorf("%s: held by %q, want %s", ip, left[ip].ContainerID, id)
		}
	}
	if _, ok := left["10.0.0.2"]; ok {
		t.Error("the earlier boot's lease is still held")
	}
	// Unknown identity: refuse rather than guess.
	if _, err := legacy.SweepEarlierBoots(ctx); err == nil {
		t.Error("a sweep without an identity succeeded")
	}
}

// fakeNS says which namespace paths are gone.
type fakeNS map[string]error

func (f fakeNS) gone(path string) (bool, error) {
	err, known := f[path]
	if !known {
		return false, nil // exists
	}
	return err == nil, err
}

func TestStaleNamespaceReclaimedOnlyWhenFull(t *testing.T) {
	mem, c := memstore.New(), newClock()
	ns := fakeNS{"/run/netns/dead": nil, "/run/netns/unknown": errors.New("permission denied")}
	opts := func(o *Options) { o.StaleAfter = 5 * time.Minute; o.NetnsGone = ns.gone }
	holderIn := func(netns string) store.Lease { return store.Lease{Host: "h1", Boot: "b1", Netns: netns} }
	mustAllocate(t, lifecycleAllocator(t, mem, c, holderIn("/run/netns/dead"), opts), "dead")                                       // .2
	mustAllocate(t, lifecycleAllocator(t, mem, c, holderIn("/run/netns/alive"), opts), "alive")                                     // .3
	mustAllocate(t, lifecycleAllocator(t, mem, c, holderIn("/run/netns/unknown"), opts), "unknown")                                 // .4
	mustAllocate(t, lifecycleAllocator(t, mem, c, holderIn(""), opts), "no-netns")                                                  // .5
	mustAllocate(t, lifecycleAllocator(t, mem, c, store.Lease{Host: "h1", Boot: "b0", Netns: "/run/netns/dead"}, opts), "old-boot") // .6

	next := lifecycleAllocator(t, mem, c, holderIn("/run/netns/new"), opts)
	// Full, and the dead one is younger than staleAfter: no address.
	c.now = c.now.Add(4 * time.Minute)
	if _, err := next.Allocate(ctx, "new", "eth0", nil); !errors.Is(err, ErrExhausted) {
		t.Fatalf("ADD before staleAfter: %v, want ErrExhausted", err)
	}
	c.now = c.now.Add(2 * time.Minute)
	if got := mustAllocate(t, next, "new"); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Errorf("ADD after staleAfter got %v, want the dead namespace's 10.0.0.2", got)
	}
	left := held(t, mem.Open())
	for ip, id := range map[string]string{"10.0.0.3": "alive", "10.0.0.4": "unknown", "10.0.0.5": "no-netns", "10.0.0.6": "old-boot"} {
		if left[ip].ContainerID != id {
			t.Errorf("%s: held by %q, want %s kept", ip, left[ip].ContainerID, id)
		}
	}
}

func TestStickyWorkloadGetsItsAddressBack(t *testing.T) {
	mem, c := memstore.New(), newClock()
	sticky := func(o *Options) { o.StickyFor = time.Hour }
	web := store.Lease{Host: "h1", Boot: "b1", Workload: "k8s/ns/web-0"}
	a := lifecycleAllocator(t, mem, c, web, sticky)
	first := mustAllocate(t, a, "pod1")
	if _, err := a.Release(ctx, "pod1", "eth0"); err != nil {
		t.Fatal(err)
	}
	// Others get other addresses while the hold lasts.
	others := lifecycleAllocator(t, mem, c, store.Lease{Host: "h1", Boot: "b1"}, sticky)
	for _, id := range []string{"o1", "o2", "o3"} {
		if got := mustAllocate(t, others, id); slices.Equal(got, first) {
			t.Errorf("%s got %v, held for web-0", id, got)
		}
	}
	// The workload comes back under a new container ID.
	if got := mustAllocate(t, a, "pod2"); !slices.Equal(got, first) {
		t.Errorf("returning workload got %v, want %v", got, first)
	}
	if n := len(held(t, mem.Open())); n != 4 {
		t.Errorf("%d leases, want 4 (no hold left behind)", n)
	}
}

func TestStickyHoldGivenUpWhenRangeFull(t *testing.T) {
	mem, c := memstore.New(), newClock()
	sticky := func(o *Options) { o.StickyFor = time.Hour }
	a := lifecycleAllocator(t, mem, c, store.Lease{Workload: "k8s/ns/web-0"}, sticky)
	first := mustAllocate(t, a, "pod1")
	if _, err := a.Release(ctx, "pod1", "eth0"); err != nil {
		t.Fatal(err)
	}
	others := lifecycleAllocator(t, mem, c, store.Lease{}, sticky)
	for _, id := range []string{"o1", "o2", "o3", "o4"} {
		mustAllocate(t, others, id)
	}
	// .2-.6 minus the hold are taken: the fifth gets the held address.
	if got := mustAllocate(t, others, "o5"); !slices.Equal(got, first) {
		t.Errorf("o5 got %v, want the held %v (the range is otherwise full)", got, first)
	}
	if _, err := others.Allocate(ctx, "o6", "eth0", nil); !errors.Is(err, ErrExhausted) {
		t.Errorf("o6: %v, want ErrExhausted", err)
	}
}

func TestGCKeepsStickyHoldsUntilExpired(t *testing.T) {
	mem, c := memstore.New(), newClock()
	a := lifecycleAllocator(t, mem, c, store.Lease{Workload: "k8s/ns/web-0"}, func(o *Options) { o.StickyFor = time.Hour })
	mustAllocate(t, a, "pod1")
	if _, err := a.Release(ctx, "pod1", "eth0"); err != nil {
		t.Fatal(err)
	}
	if gone, err := a.GC(ctx, nil); err != nil || len(gone) != 0 {
		t.Errorf("GC within stickyFor released %v (%v), want the hold kept", gone, err)
	}
	c.now = c.now.Add(time.Hour)
	if gone, err := a.GC(ctx, nil); err != nil || len(gone) != 1 || !gone[0].IsSticky() {
		t.Errorf("GC after stickyFor released %v (%v), want the hold", gone, err)
	}
}

func TestStickyOffReleasesAtOnce(t *testing.T) {
	mem, c := memstore.New(), newClock()
	a := lifecycleAllocator(t, mem, c, store.Lease{Workload: "k8s/ns/web-0"}, nil)
	mustAllocate(t, a, "pod1")
	if _, err := a.Release(ctx, "pod1", "eth0"); err != nil {
		t.Fatal(err)
	}
	if n := len(held(t, mem.Open())); n != 0 {
		t.Errorf("%d leases after DEL without stickyFor, want 0", n)
	}
}

func TestStickyIDIsAValidContainerID(t *testing.T) {
	for _, w := range []string{"k8s/ns/web-0", "mesos/net/a=b,c=d", "x y"} {
		if err := store.ValidateName("container ID", StickyID(w)); err != nil {
			t.Errorf("StickyID(%q): %v", w, err)
		}
	}
	if StickyID("a") == StickyID("b") {
		t.Error("two workloads share a hold")
	}
	_ = netip.Addr{}
}

// The sweep through a store that releases in bulk (the disk store) keeps
// the rules, and sticky holds, of the one-by-one path.
func TestSweepEarlierBootsBulk(t *testing.T) {
	s, _ := newDiskStore(t)
	c := newClock()
	mk := func(h store.Lease) *Allocator {
		return New(s, sets(t, subnet("10.0.0.0/29")), Options{Now: c.Now, Holder: h, StickyFor: time.Hour})
	}
	mustAllocate(t, mk(store.Lease{Host: "h1", Boot: "b1", Workload: "k8s/ns/db-0"}), "old-db")
	mustAllocate(t, mk(store.Lease{Host: "h1", Boot: "b1"}), "old")
	mustAllocate(t, mk(store.Lease{Host: "h2", Boot: "b1"}), "other-host")
	now := mk(store.Lease{Host: "h1", Boot: "b2"})
	gone, err := now.SweepEarlierBoots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(gone) != 2 {
		t.Errorf("swept %v, want old-db's and old's leases", gone)
	}
	left := held(t, s)
	if left["10.0.0.2"].ContainerID != StickyID("k8s/ns/db-0") || !left["10.0.0.2"].IsSticky() {
		t.Errorf("10.0.0.2 = %+v, want a hold for k8s/ns/db-0", left["10.0.0.2"])
	}
	if _, ok := left["10.0.0.3"]; ok {
		t.Error("old's lease survived the sweep")
	}
	if left["10.0.0.4"].ContainerID != "other-host" {
		t.Errorf("another host's lease was swept: %v", left)
	}
}

// A container re-created under the same ID (after a reboot, in a new
// namespace) gets its old lease back, and the lease then says so: neither
// the sweep after the reboot nor the stale rule takes it from the living
// container.
func TestHeldLeaseIsRestamped(t *testing.T) {
	mem, c := memstore.New(), newClock()
	ns := fakeNS{"/run/netns/old": nil} // the old namespace is gone
	opts := func(o *Options) { o.StaleAfter = time.Minute; o.NetnsGone = ns.gone }
	old := lifecycleAllocator(t, mem, c, store.Lease{Host: "h1", Boot: "b1", Netns: "/run/netns/old"}, opts)
	first := mustAllocate(t, old, "ctr")
	c.now = c.now.Add(time.Hour)
	again := lifecycleAllocator(t, mem, c, store.Lease{Host: "h1", Boot: "b2", Netns: "/run/netns/new"}, opts)
	if got := mustAllocate(t, again, "ctr"); !slices.Equal(got, first) {
		t.Fatalf("the same attachment got %v, held %v", got, first)
	}
	l := held(t, mem.Open())[first[0]]
	if l.Boot != "b2" || l.Netns != "/run/netns/new" {
		t.Errorf("held lease = %+v, want boot b2 and the new namespace", l)
	}
	if gone, err := again.SweepEarlierBoots(ctx); err != nil || len(gone) != 0 {
		t.Errorf("sweep took %v (%v), want nothing", gone, err)
	}
	if gone, err := again.ReclaimStale(ctx); err != nil || len(gone) != 0 {
		t.Errorf("stale rule took %v (%v), want nothing", gone, err)
	}
}

// A lease that claims this host and an earlier boot but was made after
// this boot began (two hosts with one identity) is not swept.
func TestSweepKeepsLeasesMadeThisBoot(t *testing.T) {
	mem, c := memstore.New(), newClock()
	mustAllocate(t, lifecycleAllocator(t, mem, c, store.Lease{Host: "h1", Boot: "b-other"}, nil), "twin")
	now := lifecycleAllocator(t, mem, c, store.Lease{Host: "h1", Boot: "b2"}, func(o *Options) {
		o.BootTime = c.now.Add(-time.Minute) // this boot began before the lease was made
	})
	if gone, err := now.SweepEarlierBoots(ctx); err != nil || len(gone) != 0 {
		t.Errorf("sweep took %v (%v), want the lease kept", gone, err)
	}
}

// On a store that hosts share, GC releases only this host's containers:
// the runtime's list names no other host's.
func TestGCOnlyThisHost(t *testing.T) {
	mem, c := memstore.New(), newClock()
	mustAllocate(t, lifecycleAllocator(t, mem, c, store.Lease{Host: "h1", Boot: "b1"}, nil), "a-gone")
	mustAllocate(t, lifecycleAllocator(t, mem, c, store.Lease{Host: "h1", Boot: "b1"}, nil), "a-live")
	mustAllocate(t, lifecycleAllocator(t, mem, c, store.Lease{Host: "h2", Boot: "b1"}, nil), "b-live")
	a := lifecycleAllocator(t, mem, c, store.Lease{Host: "h1", Boot: "b1"}, func(o *Options) { o.GCHost = "h1" })
	gone, err := a.GC(ctx, []Attachment{{ContainerID: "a-live", IfName: "eth0"}})
	if err != nil || len(gone) != 1 || gone[0].ContainerID != "a-gone" {
		t.Errorf("GC released %v (%v), want only a-gone's lease", gone, err)
	}
	left := held(t, mem.Open())
	owners := map[string]bool{}
	for _, l := range left {
		owners[l.ContainerID] = true
	}
	if !owners["b-live"] || !owners["a-live"] || owners["a-gone"] {
		t.Errorf("left %v, want a-live and b-live", left)
	}
}

// TestPreludeRunsUnderTheAllocationsLock: Options.Prelude runs with the
// store locked, before the allocation reads it, so that what it frees is
// there for the allocation: a sweep in the prelude that gives back the
// only address of the range lets the ADD that runs it have that address.
func TestPreludeRunsUnderTheAllocationsLock(t *testing.T) {
	s := newStore(t)
	old := New(s, sets(t, subnet("10.0.0.0/30")), Options{Holder: store.Lease{Host: "h", Boot: "boot-a"}})
	mustAllocate(t, old, "old") // a /30 has one address for hosts: .1 is the gateway
	var runs int
	opts := Options{Holder: store.Lease{Host: "h", Boot: "boot-b"}}
	opts.Prelude = func(ctx context.Context) {
		runs++
		if _, err := New(s, nil, opts).SweepEarlierBootsLocked(ctx); err != nil {
			t.Errorf("sweep in the prelude: %v", err)
		}
	}
	got := mustAllocate(t, New(s, sets(t, subnet("10.0.0.0/30")), opts), "new")
	if runs != 1 || len(got) != 1 || got[0] != "10.0.0.2" {
		t.Errorf("prelude ran %d times, the ADD got %v; want once and 10.0.0.2", runs, got)
	}
}
