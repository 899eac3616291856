package disk

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// sameFile reports whether two names of the store are one file.
func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	ia, err := os.Lstat(a)
	if err != nil {
		t.Fatal(err)
	}
	ib, err := os.Lstat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(ia, ib)
}

// noTemporaries fails the test if a temporary file is left in the store.
func noTemporaries(t *testing.T, netDir string) {
	t.Helper()
	for _, sub := range []string{leaseDir, attachDir} {
		entries, err := os.ReadDir(filepath.Join(netDir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), tempPrefix) {
				t.Errorf("temporary file left: %s/%s", sub, e.Name())
			}
		}
	}
}

func leasesOf(t *testing.T, s *Store, id string) []netip.Addr {
	t.Helper()
	var ips []netip.Addr
	do(t, s, func() error {
		ls, err := s.GetByID(bg, id, "eth0")
		for _, le := range ls {
			ips = append(ips, le.IP)
		}
		return err
	})
	slices.SortFunc(ips, netip.Addr.Compare)
	return ips
}

// The first address of an attachment is written as one file with two
// names, its lease and its index entry; a second address makes the entry
// an index record, and every step reads back and passes fsck.
func TestFirstAddressIsItsOwnIndexEntry(t *testing.T) {
	dir := t.TempDir()
	netDir := filepath.Join(dir, "net1")
	s := open(t, dir)
	entry := filepath.Join(netDir, attachDir, "c1=eth0")
	a, b := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::2")
	clean := func(step string) {
		t.Helper()
		noTemporaries(t, netDir)
		if rep := fsck(t, s, false); len(rep.Problems) != 0 {
			t.Errorf("%s: fsck: %v", step, rep.Problems)
		}
	}

	do(t, s, func() error { return s.Reserve(bg, l("10.0.0.2", "c1")) })
	if !sameFile(t, entry, filepath.Join(netDir, leaseDir, "10.0.0.2")) {
		t.Error("first address: the index entry is not the lease's file")
	}
	if got := leasesOf(t, s, "c1"); !slices.Equal(got, []netip.Addr{a}) {
		t.Errorf("first address: GetByID gives %v", got)
	}
	clean("first address")

	do(t, s, func() error { return s.Reserve(bg, l("fd00::2", "c1")) })
	if sameFile(t, entry, filepath.Join(netDir, leaseDir, "10.0.0.2")) {
		t.Error("second address: the index entry is still the first lease's file")
	}
	if got := leasesOf(t, s, "c1"); !slices.Equal(got, []netip.Addr{a, b}) {
		t.Errorf("second address: GetByID gives %v", got)
	}
	clean("second address")

	do(t, s, func() error { return s.Release(bg, a) })
	if got := leasesOf(t, s, "c1"); !slices.Equal(got, []netip.Addr{b}) {
		t.Errorf("after releasing %v: GetByID gives %v", a, got)
	}
	clean("release of one")

	do(t, s, func() error {
		got, err := s.ReleaseByID(bg, "c1", "eth0")
		if err == nil && !slices.Equal(got, []netip.Addr{b}) {
			t.Errorf("ReleaseByID released %v, want %v", got, b)
		}
		return err
	})
	if _, err := os.Lstat(entry); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("index entry after DEL: %v, want none", err)
	}
	clean("DEL")
}

// A first address that someone else holds leaves no index entry and no
// temporary file behind.
func TestFirstAddressConflictLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	do(t, s, func() error { return s.Reserve(bg, l("10.0.0.2", "c1")) })
	do(t, s, func() error {
		if err := s.Reserve(bg, l("10.0.0.2", "c2")); !errors.Is(err, store.ErrReserved) {
			t.Errorf("Reserve of a held address: got %v, want ErrReserved", err)
		}
		return nil
	})
	if _, err := os.Lstat(filepath.Join(dir, "net1", attachDir, "c2=eth0")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the loser's index entry: %v, want none", err)
	}
	noTemporaries(t, filepath.Join(dir, "net1"))
	if got := leasesOf(t, s, "c1"); len(got) != 1 {
		t.Errorf("the holder's leases: %v", got)
	}
	if rep := fsck(t, s, false); len(rep.Problems) != 0 {
		t.Errorf("fsck: %v", rep.Problems)
	}
}

// An index entry that is the lease record of another attachment is
// damaged: it does not make that lease this attachment's, and a DEL
// through it releases nothing of the other's.
func TestEntryThatIsAnotherAttachmentsLease(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	do(t, s, func() error { return s.Reserve(bg, l("10.0.0.2", "c1")) })
	netDir := filepath.Join(dir, "net1")
	if err := os.Link(filepath.Join(netDir, leaseDir, "10.0.0.2"), filepath.Join(netDir, attachDir, "c2=eth0")); err != nil {
		t.Fatal(err)
	}
	do(t, s, func() error {
		if _, err := s.GetByID(bg, "c2", "eth0"); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("GetByID through another's lease: got %v, want ErrCorrupt", err)
		}
		ips, err := s.ReleaseByID(bg, "c2", "eth0")
		if len(ips) != 0 {
			t.Errorf("ReleaseByID of c2 released %v", ips)
		}
		return err
	})
	if got := leasesOf(t, s, "c1"); len(got) != 1 {
		t.Errorf("c1's lease after c2's DEL: %v", got)
	}
}
