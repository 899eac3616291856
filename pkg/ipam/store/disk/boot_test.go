package disk

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/allocator"
	"github.com/maclan-cni/maclan/pkg/ipam/iprange"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

func openBoot(t *testing.T, dataDir string, b Boot, volatile bool, log *slog.Logger) *Store {
	t.Helper()
	s, err := New(dataDir, "net1", Options{Boot: b, Volatile: volatile, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// stamped is a lease of attachment id on ip, taken by host in boot.
func stamped(ip, id, host, boot string) store.Lease {
	le := l(ip, id)
	le.Host, le.Boot = host, boot
	return le
}

// syncsOf reports how many fsyncs fn issued on s.
func syncsOf(t *testing.T, s *Store, fn func() error) int {
	t.Helper()
	var n int
	do(t, s, func() error {
		before := s.syncs
		err := fn()
		n = s.syncs - before
		return err
	})
	return n
}

func TestVolatileOnlyForThisBootsContainerLeases(t *testing.T) {
	me := Boot{Host: "h1", ID: "b1"}
	s := openBoot(t, t.TempDir(), me, true, nil)
	reserve := func(le store.Lease) func() error { return func() error { return s.Reserve(bg, le) } }
	// Keeps the bitmap chunk's file, so that every Reserve below patches it.
	do(t, s, reserve(stamped("10.0.0.10", "c0", "h1", "b1")))

	if n := syncsOf(t, s, reserve(stamped("10.0.0.2", "c1", "h1", "b1"))); n != 0 {
		t.Errorf("ADD of a lease of this host and boot: %d fsyncs, want 0", n)
	}
	if n := syncsOf(t, s, func() error { _, err := s.ReleaseByID(bg, "c1", "eth0"); return err }); n != 0 {
		t.Errorf("DEL of it: %d fsyncs, want 0", n)
	}
	sticky := stamped("10.0.0.3", "maclan-sticky-x", "h1", "b1")
	sticky.Released = time.Unix(1700000000, 0)
	conflict := stamped("10.0.0.4", "maclan-conflict", "h1", "b1")
	conflict.Conflict = "02:00:00:00:00:01"
	for name, le := range map[string]store.Lease{
		"another boot's lease": stamped("10.0.0.5", "c2", "h1", "b0"),
		"another host's lease": stamped("10.0.0.6", "c3", "h2", "b1"),
		"an unstamped lease":   l("10.0.0.7", "c4"),
		"a sticky hold":        sticky,
		"a conflict record":    conflict,
	} {
		if n := syncsOf(t, s, reserve(le)); n != 4 {
			t.Errorf("%s: %d fsyncs, want 4 (the lease file, which is also the index entry, both directories, and the bitmap)", name, n)
		}
	}

	durable := openBoot(t, t.TempDir(), me, false, nil)
	do(t, durable, func() error { return durable.Reserve(bg, l("10.0.0.10", "c0")) })
	if n := syncsOf(t, durable, func() error { return durable.Reserve(bg, stamped("10.0.0.2", "c1", "h1", "b1")) }); n != 4 {
		t.Errorf("a store not opened Volatile: %d fsyncs, want 4", n)
	}
}

func TestBootRecordedBeforeVolatileWrites(t *testing.T) {
	dataDir := t.TempDir()
	s := openBoot(t, dataDir, Boot{Host: "h1", ID: "b1"}, true, nil)
	do(t, s, func() error { return nil })
	b, err := os.ReadFile(filepath.Join(dataDir, "net1", bootMarker("h1")))
	if err != nil || string(b) != "b1\n" {
		t.Fatalf("boot marker after the first lock: %q, %v; want b1", b, err)
	}
}

// powerCut leaves in a store what a power cut during volatile writes can:
// a lease lost whose bitmap bit reached the disk, a torn lease file and a
// leftover temporary file. It returns the addresses of the first two.
func powerCut(t *testing.T, dataDir string) (lost, torn netip.Addr) {
	t.Helper()
	s := openBoot(t, dataDir, Boot{Host: "h1", ID: "b1"}, true, nil)
	lost, torn = netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	do(t, s, func() error {
		for _, le := range []store.Lease{stamped("10.0.0.2", "c1", "h1", "b1"), stamped("10.0.0.3", "c2", "h1", "b1")} {
			if err := s.Reserve(bg, le); err != nil {
				return err
			}
		}
		return nil
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	leases := filepath.Join(dataDir, "net1", leaseDir)
	if err := os.Remove(filepath.Join(leases, lost.String())); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(leases, torn.String()), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(leases, tempPrefix+"10.0.0.9-1"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return lost, torn
}

func TestRepairAfterTheBootEnds(t *testing.T) {
	dataDir := t.TempDir()
	lost, torn := powerCut(t, dataDir)

	var logs bytes.Buffer
	s := openBoot(t, dataDir, Boot{Host: "h1", ID: "b2"}, true, slog.New(slog.NewTextHandler(&logs, nil)))
	do(t, s, func() error {
		ip, err := s.NextFree(bg, lost, netip.MustParseAddr("10.0.0.9"))
		if err != nil {
			return err
		}
		if ip != lost {
			t.Errorf("next free after the repair: %s, want %s (its lease never reached the disk; its bit must not keep it)", ip, lost)
		}
		le, err := s.Get(bg, torn)
		if err != nil || le.ContainerID != "c2" {
			t.Errorf("torn lease after the repair: %+v, %v; want it restored for its sole claimant c2", le, err)
		}
		return nil
	})
	if rep := fsck(t, s, false); len(rep.Problems) != 0 {
		t.Errorf("fsck after the repair: %s", kinds(rep))
	}
	if !strings.Contains(logs.String(), "boot=b1") || !strings.Contains(logs.String(), "kind=bitmap") {
		t.Errorf("the repair should be logged with the boot that ended and what it fixed:\n%s", logs.String())
	}
	if b, _ := os.ReadFile(filepath.Join(dataDir, "net1", bootMarker("h1"))); string(b) != "b2\n" {
		t.Errorf("boot marker after the repair: %q, want b2", b)
	}
}

func TestNoRepairInTheSameBootOrForAnotherHost(t *testing.T) {
	for name, b := range map[string]Boot{"same boot": {Host: "h1", ID: "b1"}, "another host": {Host: "h2", ID: "b7"}} {
		t.Run(name, func(t *testing.T) {
			dataDir := t.TempDir()
			lost, _ := powerCut(t, dataDir) // here: outside damage, for fsck to find
			s := openBoot(t, dataDir, b, true, nil)
			do(t, s, func() error {
				ip, err := s.NextFree(bg, lost, netip.MustParseAddr("10.0.0.9"))
				if err == nil && ip == lost {
					t.Errorf("the store was repaired though boot %s of host %s has not ended", "b1", "h1")
				}
				return nil
			})
			if rep := fsck(t, s, false); len(rep.Problems) == 0 {
				t.Error("fsck finds nothing: the damage was repaired behind the operator's back")
			}
		})
	}
}

func TestDurableStoreRepairsAndDropsAnOldMarker(t *testing.T) {
	dataDir := t.TempDir()
	lost, _ := powerCut(t, dataDir)
	s := openBoot(t, dataDir, Boot{Host: "h1", ID: "b2"}, false, nil)
	do(t, s, func() error {
		if ip, err := s.NextFree(bg, lost, netip.MustParseAddr("10.0.0.9")); err != nil || ip != lost {
			t.Errorf("next free: %s, %v; want %s", ip, err, lost)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(dataDir, "net1", bootMarker("h1"))); !os.IsNotExist(err) {
		t.Errorf("a store no longer written without fsync keeps its boot marker: %v", err)
	}
}

func rangeSets(t *testing.T, prefix string) []iprange.RangeSet {
	t.Helper()
	set := iprange.RangeSet{{Subnet: netip.MustParsePrefix(prefix)}}
	if err := set.Canonicalize(); err != nil {
		t.Fatal(err)
	}
	return []iprange.RangeSet{set}
}

// A container takes X and is deleted in boot b1, all without fsync. The
// power cut loses the DEL's unlinks and the lease's data: X's lease comes
// back empty, claimed by the index entry whose removal was lost: the same
// empty file (the entry of a first address is a second name of its lease),
// or an index record of its own (a second address, an older store). The
// repair restores it for that claimant as a lease of the ended boot, so
// the sweep gives it back: no DEL will come for it again.
func TestTornLeaseOfTheEndedBootIsSwept(t *testing.T) {
	for _, shared := range []bool{true, false} {
		t.Run(map[bool]string{true: "one file", false: "an index record"}[shared], func(t *testing.T) {
			dataDir := t.TempDir()
			s1 := openBoot(t, dataDir, Boot{Host: "h1", ID: "b1"}, true, nil)
			x := netip.MustParseAddr("10.0.0.2")
			entry := filepath.Join(dataDir, "net1", attachDir, "c1=eth0")
			do(t, s1, func() error {
				if err := s1.Reserve(bg, stamped(x.String(), "c1", "h1", "b1")); err != nil {
					return err
				}
				_, err := s1.ReleaseByID(bg, "c1", "eth0")
				return err
			})
			_ = s1.Close()
			lease := filepath.Join(dataDir, "net1", leaseDir, x.String())
			if err := os.WriteFile(lease, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			bootTime := time.Now()
			if err := os.Chtimes(lease, bootTime.Add(-time.Hour), bootTime.Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}
			if shared {
				if err := os.Link(lease, entry); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(entry, encodeAttach("c1", "eth0", []netip.Addr{x}), 0o600); err != nil {
				t.Fatal(err)
			}

			s2 := openBoot(t, dataDir, Boot{Host: "h1", ID: "b2"}, true, nil)
			a := allocator.New(s2, rangeSets(t, "10.0.0.0/29"), allocator.Options{Holder: store.Lease{Host: "h1", Boot: "b2"}, BootTime: bootTime})
			if _, err := a.SweepEarlierBoots(bg); err != nil {
				t.Fatal(err)
			}
			do(t, s2, func() error {
				if le, err := s2.Get(bg, x); err == nil {
					t.Errorf("after the repair and the sweep %s is still held by %s (host %q, boot %q)", x, le.ContainerID, le.Host, le.Boot)
				}
				return nil
			})
			if rep := fsck(t, s2, false); len(rep.Problems) != 0 {
				t.Errorf("fsck after the sweep: %v", rep.Problems)
			}
		})
	}
}

// A repair that cannot finish is logged and the store used as it is: its
// damage can lose addresses, never hand one out twice, and failing every
// call of the boot would take the network down.
func TestFailedRepairDoesNotStopTheStore(t *testing.T) {
	dataDir := t.TempDir()
	powerCut(t, dataDir)
	// A leftover that fsck cannot remove: a temporary name on a directory
	// that is not empty.
	if err := os.MkdirAll(filepath.Join(dataDir, "net1", cursorDir, tempPrefix+"x", "y"), 0o700); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	for i := range 3 {
		s := openBoot(t, dataDir, Boot{Host: "h1", ID: "b2"}, true, slog.New(slog.NewTextHandler(&logs, nil)))
		if err := store.WithLock(bg, s, func() error { return nil }); err != nil {
			t.Errorf("call %d of the next boot: %v", i, err)
		}
		_ = s.Close()
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 {
		t.Errorf("the failed repair should be logged once, as an error; %d times:\n%s", n, logs.String())
	}
}
