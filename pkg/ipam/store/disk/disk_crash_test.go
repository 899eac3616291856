package disk

import (
	"context"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

var bg = context.Background()

func open(t *testing.T, dataDir string) *Store {
	t.Helper()
	s, err := New(dataDir, "net1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() }) // nothing to check after the test
	return s
}

func do(t *testing.T, s *Store, fn func() error) {
	t.Helper()
	if err := store.WithLock(bg, s, fn); err != nil {
		t.Fatal(err)
	}
}

func l(ip, id string) store.Lease {
	return store.Lease{IP: netip.MustParseAddr(ip), ContainerID: id, IfName: "eth0", Created: time.Unix(1700000000, 0)}
}

func fsck(t *testing.T, s *Store, repair bool) FsckReport {
	t.Helper()
	var rep FsckReport
	do(t, s, func() error {
		var err error
		rep, err = s.Fsck(bg, repair)
		return err
	})
	return rep
}

func kinds(rep FsckReport) string {
	var k []string
	for _, p := range rep.Problems {
		k = append(k, p.Kind)
	}
	return strings.Join(k, ",")
}

func TestNewRejectsEscapingNames(t *testing.T) {
	for _, name := range []string{"..", "../x", "a/b", "", ".hidden", "a\x00b", strings.Repeat("n", 300)} {
		if _, err := New(t.TempDir(), name, Options{}); err == nil {
			t.Errorf("New(%q) succeeded, want an error", name)
		}
	}
}

func TestPermissions(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	do(t, s, func() error { return s.Reserve(bg, l("10.0.0.2", "c1")) })
	err := filepath.WalkDir(filepath.Join(dir, "net1"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCorruptLeaseIsReported(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	do(t, s, func() error { return s.Reserve(bg, l("10.0.0.2", "c1")) })
	path := filepath.Join(dir, "net1", "leases", "10.0.0.2")
	b, _ := os.ReadFile(path)
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), "c1", "c2", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	do(t, s, func() error {
		if _, err := s.Get(bg, netip.MustParseAddr("10.0.0.2")); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("Get of a tampered lease: got %v, want ErrCorrupt", err)
		}
		if _, err := s.List(bg); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("List: got %v, want ErrCorrupt reported", err)
		}
		if _, err := s.GetByID(bg, "c1", "eth0"); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("GetByID (CHECK): got %v, want ErrCorrupt", err)
		}
		// The address stays blocked, loudly: Reserve says why.
		err := s.Reserve(bg, l("10.0.0.2", "c3"))
		if !errors.Is(err, store.ErrReserved) || !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("Reserve over a damaged lease: got %v, want ErrReserved and ErrCorrupt", err)
		}
		return nil
	})
	// The lease of an attachment's first address is also its index entry
	// (one file, two names): both report the damage, and the entry's
	// name still says whose the lease is.
	rep := fsck(t, s, false)
	if kinds(rep) != "corrupt-index,corrupt-lease" {
		t.Errorf("fsck: got %v, want corrupt-index and corrupt-lease", rep.Problems)
	}
	fsck(t, s, true) // c1's index entry is the sole claimant: restored for c1
	do(t, s, func() error {
		got, err := s.Get(bg, netip.MustParseAddr("10.0.0.2"))
		if err != nil || got.ContainerID != "c1" {
			t.Errorf("after repair: got %+v, %v; want c1's lease", got, err)
		}
		return nil
	})
	if rep := fsck(t, s, false); len(rep.Problems) != 0 {
		t.Errorf("fsck after repair: %v", rep.Problems)
	}
}

func TestCorruptUnclaimedLeaseIsQuarantined(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "net1", "leases", "10.0.0.9"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	rep := fsck(t, s, true)
	if !strings.Contains(kinds(rep), "corrupt-lease") {
		t.Errorf("got %v", rep.Problems)
	}
	if _, err := os.Stat(filepath.Join(dir, "net1", "leases", "10.0.0.9")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("damaged lease still in place: %v", err)
	}
	q, _ := os.ReadDir(filepath.Join(dir, "net1", "quarantine"))
	if len(q) != 1 {
		t.Errorf("quarantine holds %d files, want 1", len(q))
	}
}

// The torn state a crash in Reserve can leave: the index names an address
// whose lease was never written. DEL succeeds, CHECK says what is missing,
// fsck drops the entry.
func TestIntentWithoutLease(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	do(t, s, func() error {
		return s.writeAttach("c1", "eth0", []netip.Addr{netip.MustParseAddr("10.0.0.2")}, false)
	})
	do(t, s, func() error {
		got, err := s.GetByID(bg, "c1", "eth0")
		if err != nil || len(got) != 0 {
			t.Errorf("GetByID: got %v, %v; want no lease", got, err)
		}
		return nil
	})
	if rep := fsck(t, s, false); kinds(rep) != "stale-index" {
		t.Errorf("fsck: got %v, want stale-index", rep.Problems)
	}
	do(t, s, func() error {
		ips, err := s.ReleaseByID(bg, "c1", "eth0")
		if err != nil || len(ips) != 0 {
			t.Errorf("ReleaseByID: got %v, %v; want nothing released, no error", ips, err)
		}
		return nil
	})
	if rep := fsck(t, s, false); len(rep.Problems) != 0 {
		t.Errorf("fsck after DEL: %v", rep.Problems)
	}
}

// An index entry naming an address that someone else holds (Reserve lost
// the race and crashed before undoing its intent) must not let DEL free
// the other attachment's address.
func TestIntentOnForeignLease(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	do(t, s, func() error {
		if err := s.Reserve(bg, l("10.0.0.2", "owner")); err != nil {
			return err
		}
		return s.writeAttach("c1", "eth0", []netip.Addr{netip.MustParseAddr("10.0.0.2")}, false)
	})
	do(t, s, func() error {
		if _, err := s.ReleaseByID(bg, "c1", "eth0"); err != nil {
			return err
		}
		_, err := s.Get(bg, netip.MustParseAddr("10.0.0.2"))
		return err
	})
}

// Outside damage only: a lease with no index entry. fsck finds and
// indexes it, after which DEL releases it.
func TestOrphanLeaseRepaired(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	do(t, s, func() error { return s.Reserve(bg, l("10.0.0.2", "c1")) })
	if err := os.Remove(filepath.Join(dir, "net1", "attach", "c1=eth0")); err != nil {
		t.Fatal(err)
	}
	if rep := fsck(t, s, true); kinds(rep) != "orphan-lease" {
		t.Errorf("fsck: got %v, want orphan-lease", rep.Problems)
	}
	do(t, s, func() error {
		ips, err := s.ReleaseByID(bg, "c1", "eth0")
		if err == nil && len(ips) != 1 {
			t.Errorf("ReleaseByID after repair: released %v, want the orphan", ips)
		}
		return err
	})
}

// fsck --repair killed while restoring a damaged lease for its sole
// claimant leaves the damaged lease where it was (and a copy in
// quarantine/), never the address without a lease: the next repair
// restores it, and the address is not handed out meanwhile.
func TestRestoreKilledHalfwayKeepsTheAddress(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	do(t, s, func() error { return s.Reserve(bg, l("10.0.0.2", "c1")) })
	rel := filepath.Join(leaseDir, "10.0.0.2")
	f, err := os.OpenFile(filepath.Join(dir, "net1", rel), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("X"), 5); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// The repair's first step, then the kill.
	do(t, s, func() error { return s.quarantineCopy(rel) })
	do(t, s, func() error {
		if err := s.Reserve(bg, l("10.0.0.2", "c2")); !errors.Is(err, store.ErrReserved) {
			t.Errorf("Reserve of the address after the kill: got %v, want ErrReserved", err)
		}
		return nil
	})
	fsck(t, s, true)
	do(t, s, func() error {
		got, err := s.Get(bg, netip.MustParseAddr("10.0.0.2"))
		if err != nil || got.ContainerID != "c1" {
			t.Errorf("after the next repair: got %+v, %v; want c1's lease", got, err)
		}
		return nil
	})
	q, err := os.ReadDir(filepath.Join(dir, "net1", quarantineDir))
	if err != nil || len(q) != 2 {
		t.Errorf("quarantine/: %d files (%v), want the damaged record kept by each repair", len(q), err)
	}
}

func TestDamagedIndexFallsBackToScan(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	do(t, s, func() error { return s.Reserve(bg, l("10.0.0.2", "c1")) })
	// A new file under the entry's name: the lease, which the entry was a
	// link to, stays whole.
	entry := filepath.Join(dir, "net1", "attach", "c1=eth0")
	if err := os.Remove(entry); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(entry, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	do(t, s, func() error {
		ips, err := s.ReleaseByID(bg, "c1", "eth0")
		if err == nil && len(ips) != 1 {
			t.Errorf("released %v, want 10.0.0.2", ips)
		}
		return err
	})
}

// A damaged bitmap chunk is rebuilt from the lease names on first use; a
// set bit without a lease (which the write order never produces) is found
// by fsck.
func TestBitmapRepair(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	do(t, s, func() error { return s.Reserve(bg, l("10.0.0.2", "c1")) })
	chunkPath := filepath.Join(dir, "net1", "bitmap", "10.0.0.0")
	if err := os.WriteFile(chunkPath, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	do(t, s, func() error {
		ip, err := s.NextFree(bg, netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.9"))
		if err != nil || ip.String() != "10.0.0.3" {
			t.Errorf("NextFree over a rebuilt chunk: got %v, %v; want 10.0.0.3", ip, err)
		}
		// Now fake a leaked bit.
		return s.setBits([]netip.Addr{netip.MustParseAddr("10.0.0.5")}, true, false)
	})
	if rep := fsck(t, s, true); kinds(rep) != "bitmap" {
		t.Errorf("fsck: got %v, want bitmap", rep.Problems)
	}
	do(t, s, func() error {
		ip, err := s.NextFree(bg, netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.9"))
		if err != nil || ip.String() != "10.0.0.5" {
			t.Errorf("after repair: got %v, %v; want 10.0.0.5 free", ip, err)
		}
		return nil
	})
}

func TestFsckRemovesTempFiles(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "net1", "leases", ".tmp-10.0.0.2-123"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if rep := fsck(t, s, true); kinds(rep) != "temp" {
		t.Errorf("fsck: got %v, want temp", rep.Problems)
	}
	if rep := fsck(t, s, false); len(rep.Problems) != 0 {
		t.Errorf("fsck after repair: %v", rep.Problems)
	}
}

func TestLeaseRoundTrip(t *testing.T) {
	want := l("fd00::2", "c1")
	got, err := decodeLease("fd00::2", encodeLease(want))
	if err != nil || got.IP != want.IP || got.ContainerID != want.ContainerID || got.IfName != want.IfName || !got.Created.Equal(want.Created) {
		t.Fatalf("got %+v, %v; want %+v", got, err, want)
	}
	if _, err := decodeLease("fd00::3", encodeLease(want)); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("lease under another address's name: got %v, want ErrCorrupt", err)
	}
	enc := encodeLease(want)
	for i := range enc {
		bad := append([]byte{}, enc...)
		bad[i] ^= 0x01
		if got, err := decodeLease("fd00::2", bad); err == nil && (got.ContainerID != want.ContainerID || got.IfName != want.IfName || got.IP != want.IP) {
			t.Errorf("flipping byte %d changed the lease undetected: %+v", i, got)
		}
	}
}

func FuzzDecodeLease(f *testing.F) {
	f.Add("10.0.0.2", encodeLease(l("10.0.0.2", "c1")))
	f.Add("fd00::2", encodeLease(l("fd00::2", "abc-123_x.y")))
	f.Add("10.0.0.2", []byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		if len(data) > maxRecordSize {
			return // the store reads no more (readLease)
		}
		got, err := decodeLease(name, data)
		if err != nil {
			if !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if got.IP.String() != name || store.ValidateAttachment(got.ContainerID, got.IfName) != nil {
			t.Fatalf("accepted an inconsistent lease %+v under %q", got, name)
		}
		again, err := decodeLease(name, encodeLease(got))
		if err != nil || again.ContainerID != got.ContainerID || again.IfName != got.IfName || !again.Created.Equal(got.Created) {
			t.Fatalf("re-encoding %+v gives %+v, %v", got, again, err)
		}
	})
}
