package allocator

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// clock is a settable Options.Now.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

// getLease reads the lease of ip (ErrNotFound if none).
func getLease(t *testing.T, st store.Store, ip string) (store.Lease, error) {
	t.Helper()
	var l store.Lease
	err := store.WithLock(ctx, st, func() error {
		var err error
		l, err = st.Get(ctx, netip.MustParseAddr(ip))
		return err
	})
	return l, err
}

// fullWithConflict makes a /29 (.2-.6) whose .2 is a conflict record made
// at the clock's time and whose other four addresses are leased.
func fullWithConflict(t *testing.T, lifetime time.Duration) (*Allocator, store.Store, *clock) {
	t.Helper()
	st := newStore(t)
	clk := &clock{now: time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)}
	a := New(st, sets(t, subnet("10.1.0.0/29")), Options{Now: clk.Now, ConflictLifetime: lifetime})
	if got := mustAllocate(t, a, "c1"); got[0] != "10.1.0.2" {
		t.Fatalf("first address %v, want 10.1.0.2", got)
	}
	if err := a.MarkConflict(ctx, netip.MustParseAddr("10.1.0.2"), "02:00:00:00:00:99", "c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Release(ctx, "c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"c2", "c3", "c4", "c5"} {
		mustAllocate(t, a, id)
	}
	return a, st, clk
}

// TestConflictRecordExpires: a conflict record keeps its address out of use
// for the lifetime and no longer. Then it is a candidate again: handed out
// (fresh, so that the caller probes it) and, when the device still answers,
// recorded again with a new time.
func TestConflictRecordExpires(t *testing.T) {
	a, st, clk := fullWithConflict(t, 10*time.Minute)

	clk.now = clk.now.Add(10*time.Minute - time.Second)
	if _, err := a.Allocate(ctx, "c6", "eth0", nil); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Allocate before the record expires: got %v, want ErrExhausted", err)
	}
	if err := a.Available(ctx); !errors.Is(err, ErrExhausted) {
		t.Errorf("Available before the record expires: got %v, want ErrExhausted", err)
	}
	if gone, err := a.GC(ctx, []Attachment{{ContainerID: "c2", IfName: "eth0"}, {ContainerID: "c3", IfName: "eth0"}, {ContainerID: "c4", IfName: "eth0"}, {ContainerID: "c5", IfName: "eth0"}}); err != nil || len(gone) != 0 {
		t.Errorf("GC before the record expires: released %v (%v), want nothing", gone, err)
	}

	clk.now = clk.now.Add(time.Second)
	if err := a.Available(ctx); err != nil {
		t.Errorf("Available once the record has expired: got %v, want nil", err)
	}
	got, err := a.Allocate(ctx, "c6", "eth0", nil)
	if err != nil {
		t.Fatalf("Allocate once the record has expired: %v", err)
	}
	if got[0].IP.String() != "10.1.0.2" || !got[0].Fresh {
		t.Fatalf("Allocate once the record has expired = %+v, want a fresh 10.1.0.2", got[0])
	}
	if l, err := getLease(t, st, "10.1.0.2"); err != nil || l.ContainerID != "c6" || l.Conflict != "" {
		t.Errorf("lease of 10.1.0.2 = %+v (%v), want c6's, no conflict: the new lease replaces the record", l, err)
	}

	// The probe of c6's address is answered again: the record is back,
	// stamped with the new time, and lasts a whole lifetime from it.
	clk.now = clk.now.Add(time.Minute)
	if err := a.MarkConflict(ctx, got[0].IP, "02:00:00:00:00:98", "c6", "eth0"); err != nil {
		t.Fatal(err)
	}
	l, err := getLease(t, st, "10.1.0.2")
	if err != nil || l.Conflict != "02:00:00:00:00:98" || !l.Created.Equal(clk.now) {
		t.Errorf("record after a second answer = %+v (%v), want 02:00:00:00:00:98 at %s", l, err, clk.now)
	}
	clk.now = clk.now.Add(10*time.Minute - time.Second)
	if _, err := a.Allocate(ctx, "c7", "eth0", nil); !errors.Is(err, ErrExhausted) {
		t.Errorf("Allocate within the refreshed lifetime: got %v, want ErrExhausted", err)
	}
}

// TestGCReleasesExpiredConflicts: GC keeps a live record and releases an
// expired one, whatever the list of attachments.
func TestGCReleasesExpiredConflicts(t *testing.T) {
	a, st, clk := fullWithConflict(t, time.Minute)
	valid := []Attachment{{ContainerID: "c2", IfName: "eth0"}, {ContainerID: "c3", IfName: "eth0"}, {ContainerID: "c4", IfName: "eth0"}, {ContainerID: "c5", IfName: "eth0"}}
	clk.now = clk.now.Add(time.Minute)
	gone, err := a.GC(ctx, valid)
	if err != nil {
		t.Fatal(err)
	}
	if len(gone) != 1 || gone[0].IP.String() != "10.1.0.2" || gone[0].Conflict == "" {
		t.Errorf("GC released %+v, want the conflict record of 10.1.0.2", gone)
	}
	if _, err := getLease(t, st, "10.1.0.2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("10.1.0.2 after GC: got %v, want ErrNotFound", err)
	}
	if n := leaseCount(t, st); n != 4 {
		t.Errorf("%d leases after GC, want the 4 valid ones", n)
	}
}

// TestConflictRecordsWithoutLifetime: a zero lifetime (no conflict
// detection to probe the address again) keeps records as before.
func TestConflictRecordsWithoutLifetime(t *testing.T) {
	a, st, clk := fullWithConflict(t, 0)
	clk.now = clk.now.Add(1000 * time.Hour)
	if _, err := a.Allocate(ctx, "c6", "eth0", nil); !errors.Is(err, ErrExhausted) {
		t.Errorf("Allocate: got %v, want ErrExhausted", err)
	}
	if gone, err := a.GC(ctx, nil); err != nil || slices.ContainsFunc(gone, func(l store.Lease) bool { return l.Conflict != "" }) {
		t.Errorf("GC released %+v (%v), want no conflict record", gone, err)
	}
	if l, err := getLease(t, st, "10.1.0.2"); err != nil || l.Conflict == "" {
		t.Errorf("10.1.0.2 = %+v (%v), want its conflict record", l, err)
	}
}

// TestConflictRecordFromTheFuture: a record stamped more than a lifetime
// ahead (the clock was set back since) expires rather than lasting until
// the clock catches up.
func TestConflictRecordFromTheFuture(t *testing.T) {
	a, _, clk := fullWithConflict(t, time.Minute)
	clk.now = clk.now.Add(-time.Minute)
	if _, err := a.Allocate(ctx, "c6", "eth0", nil); !errors.Is(err, ErrExhausted) {
		t.Errorf("Allocate a lifetime before the record: got %v, want ErrExhausted", err)
	}
	clk.now = clk.now.Add(-time.Second)
	if got := mustAllocate(t, a, "c6"); got[0] != "10.1.0.2" {
		t.Errorf("Allocate more than a lifetime before the record = %v, want 10.1.0.2", got)
	}
}
