package disk

import (
	"bytes"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// Each way of handing New a data directory that someone else can change:
// New refuses it, naming the directory and the reason, and creates
// nothing in it.
func TestNewRefusesUntrustedDataDir(t *testing.T) {
	for _, tc := range []struct {
		name    string
		plant   func(t *testing.T, root string) (dataDir, bad string)
		mention string
	}{
		{"world-writable sticky dataDir", func(t *testing.T, root string) (string, string) {
			chmod(t, root, 0o777|fs.ModeSticky)
			return root, root
		}, "mode 1777"},
		{"group-writable dataDir", func(t *testing.T, root string) (string, string) {
			chmod(t, root, 0o770)
			return root, root
		}, "mode 0770"},
		{"symlinked dataDir", func(t *testing.T, root string) (string, string) {
			link := filepath.Join(root, "link")
			symlink(t, t.TempDir(), link)
			return link, link
		}, "symbolic link"},
		{"world-writable network directory", func(t *testing.T, root string) (string, string) {
			mkdir(t, filepath.Join(root, "net1"), 0o777)
			return root, filepath.Join(root, "net1")
		}, "mode 0777"},
		{"symlinked leases directory", func(t *testing.T, root string) (string, string) {
			mkdir(t, filepath.Join(root, "net1"), 0o700)
			symlink(t, t.TempDir(), filepath.Join(root, "net1", "leases"))
			return root, filepath.Join(root, "net1", "leases")
		}, "symbolic link"},
		{"dataDir of another user", func(t *testing.T, root string) (string, string) {
			if os.Geteuid() != 0 {
				t.Skip("needs root to give a directory away")
			}
			if err := os.Chown(root, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return root, root
		}, "owned by uid 65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			dataDir, bad := tc.plant(t, root)
			before := tree(t, root)
			s, err := New(dataDir, "net1", Options{})
			if err == nil {
				_ = s.Close()
				t.Fatalf("New(%s) succeeded, want a refusal naming %s", dataDir, bad)
			}
			if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), bad+" ") || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("got %v; want ErrUnavailable naming %s and %q", err, bad, tc.mention)
			}
			if after := tree(t, root); after != before {
				t.Errorf("New created files although it refused:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// Parents that New creates are made 0700 and accepted.
func TestNewCreatesMissingParents(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "a", "b")
	s := open(t, dataDir)
	do(t, s, func() error { return s.Reserve(bg, l("10.0.0.2", "c1")) })
	for _, d := range []string{filepath.Dir(dataDir), dataDir} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, %v; want a 0700 directory", d, fi.Mode(), err)
		}
	}
}

// A symbolic link planted as the lock file: New refuses it and creates
// nothing at its target (the old code created the target as root).
func TestLockFileSymlinkRefused(t *testing.T) {
	dataDir, outside := t.TempDir(), t.TempDir()
	mkdir(t, filepath.Join(dataDir, "net1"), 0o700)
	target := filepath.Join(outside, "created-by-root")
	symlink(t, target, filepath.Join(dataDir, "net1", "lock"))
	if s, err := New(dataDir, "net1", Options{}); err == nil {
		_ = s.Close()
		t.Error("New over a symlinked lock file succeeded")
	} else if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("got %v; want ErrUnavailable saying symbolic link", err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the lock's symlink target was created: %v", err)
	}
}

// A bitmap chunk replaced by a symbolic link to a file elsewhere: the store
// neither reads that file as its bitmap nor writes into it; it rebuilds the
// chunk in place.
func TestPlantedBitmapNotWrittenThrough(t *testing.T) {
	dataDir, outside := t.TempDir(), t.TempDir()
	s := open(t, dataDir)
	do(t, s, func() error { return s.Reserve(bg, l("10.0.0.2", "c1")) })
	chunkPath := filepath.Join(dataDir, "net1", "bitmap", "10.0.0.0")
	victim := filepath.Join(outside, "victim")
	orig := readFile(t, chunkPath)
	writeFile(t, victim, orig)
	rm(t, chunkPath)
	symlink(t, victim, chunkPath)
	do(t, s, func() error { return s.Reserve(bg, l("10.0.0.3", "c2")) })
	if got := readFile(t, victim); !bytes.Equal(got, orig) {
		t.Error("the store wrote its bitmap through a planted symlink")
	}
	if fi, err := os.Lstat(chunkPath); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("chunk after Reserve: %v, %v; want a regular file again", fi, err)
	}
	if rep := fsck(t, s, false); len(rep.Problems) != 0 {
		t.Errorf("fsck after the rebuild: %v", rep.Problems)
	}
}

// A lease, an index entry and a cursor planted as symbolic links to files
// that hold valid records: none is believed. The lease and the entry count
// as damaged (fsck quarantines them, moving the link, not its target), the
// cursor as absent.
func TestPlantedRecordsNotFollowed(t *testing.T) {
	dataDir, outside := t.TempDir(), t.TempDir()
	s := open(t, dataDir)
	ip := netip.MustParseAddr("10.0.0.5")
	plant := func(sub, name string, content []byte) string {
		target := filepath.Join(outside, sub)
		writeFile(t, target, content)
		symlink(t, target, filepath.Join(dataDir, "net1", sub, name))
		return target
	}
	leaseTarget := plant("leases", ip.String(), encodeLease(l(ip.String(), "c9")))
	attachTarget := plant("attach", "c9=eth0", encodeAttach("c9", "eth0", []netip.Addr{ip}))
	plant("cursor", "0", []byte("10.0.0.77\n"))
	do(t, s, func() error {
		if got, err := s.Get(bg, ip); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("Get of a symlinked lease: %+v, %v; want ErrCorrupt", got, err)
		}
		if ips, err := s.readAttach("c9", "eth0"); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("index entry through a symlink: %v, %v; want ErrCorrupt", ips, err)
		}
		if c, err := s.Cursor(bg, "0"); err != nil || c.IsValid() {
			t.Errorf("cursor through a symlink: %v, %v; want none", c, err)
		}
		return nil
	})
	fsck(t, s, true)
	for _, target := range []string{leaseTarget, attachTarget} {
		if _, err := os.Stat(target); err != nil {
			t.Errorf("fsck --repair touched the target %s: %v", target, err)
		}
	}
	do(t, s, func() error { return s.Reserve(bg, l(ip.String(), "c1")) })
	if rep := fsck(t, s, false); len(rep.Problems) != 0 {
		t.Errorf("fsck after repair: %v", rep.Problems)
	}
}

// A FIFO planted as the cursor, a lease and a bitmap chunk: reading it
// would wait for a writer for ever, with the store locked. The store
// treats each as damaged instead (the old code blocked here).
func TestPlantedFIFONotRead(t *testing.T) {
	dataDir := t.TempDir()
	s := open(t, dataDir)
	for _, p := range []string{"cursor/0", "leases/10.0.0.5", "bitmap/10.0.0.0"} {
		if err := syscall.Mkfifo(filepath.Join(dataDir, "net1", p), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	do(t, s, func() error {
		if c, err := s.Cursor(bg, "0"); err != nil || c.IsValid() {
			t.Errorf("FIFO cursor: %v, %v; want none", c, err)
		}
		if _, err := s.Get(bg, netip.MustParseAddr("10.0.0.5")); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("FIFO lease: %v; want ErrCorrupt", err)
		}
		// The chunk is rebuilt from the regular lease files: .5 looks
		// free, and Reserve finds it blocked by the damaged lease.
		ip, err := s.NextFree(bg, netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.9"))
		if err != nil || ip.String() != "10.0.0.5" {
			t.Errorf("NextFree over a FIFO chunk: %v, %v; want 10.0.0.5", ip, err)
		}
		if err := s.Reserve(bg, l("10.0.0.5", "c1")); !errors.Is(err, store.ErrReserved) || !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("Reserve over a FIFO lease: %v; want ErrReserved and ErrCorrupt", err)
		}
		return nil
	})
}

// Finding 7: a chunk file goes when its last address is released, by
// Release and by ReleaseByID, and comes back when needed.
func TestEmptyChunkDeleted(t *testing.T) {
	dataDir := t.TempDir()
	s := open(t, dataDir)
	bitmap := filepath.Join(dataDir, "net1", "bitmap")
	do(t, s, func() error {
		for _, le := range []store.Lease{l("10.0.0.2", "c1"), l("10.0.0.3", "c2"), l("fd00::1:2", "c1")} {
			if err := s.Reserve(bg, le); err != nil {
				return err
			}
		}
		return nil
	})
	if got := names(t, bitmap); got != "10.0.0.0,fd00::1:0" {
		t.Fatalf("bitmap files %s", got)
	}
	do(t, s, func() error {
		_, err := s.ReleaseByID(bg, "c1", "eth0")
		return err
	})
	if got := names(t, bitmap); got != "10.0.0.0" {
		t.Errorf("after releasing c1 (one of two v4 leases, the only v6 one): bitmap files %s, want 10.0.0.0", got)
	}
	do(t, s, func() error { return s.Release(bg, netip.MustParseAddr("10.0.0.3")) })
	if got := names(t, bitmap); got != "" {
		t.Errorf("after releasing every lease: bitmap files %s, want none", got)
	}
	do(t, s, func() error {
		if err := s.Reserve(bg, l("10.0.0.2", "c3")); err != nil {
			return err
		}
		ip, err := s.NextFree(bg, netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.9"))
		if err != nil || ip.String() != "10.0.0.3" {
			t.Errorf("NextFree after the chunk came back: %v, %v; want 10.0.0.3", ip, err)
		}
		return nil
	})
	if rep := fsck(t, s, false); len(rep.Problems) != 0 {
		t.Errorf("fsck: %v", rep.Problems)
	}
}

// An all-clear chunk file left by an older version (or by a crash that
// undid its unlink) is reported by fsck and deleted by fsck --repair.
func TestFsckDeletesEmptyChunk(t *testing.T) {
	dataDir := t.TempDir()
	s := open(t, dataDir)
	path := filepath.Join(dataDir, "net1", "bitmap", "10.0.1.0")
	writeFile(t, path, new(chunk).marshal())
	if rep := fsck(t, s, false); kinds(rep) != "bitmap" {
		t.Errorf("fsck: %v, want one bitmap problem", rep.Problems)
	}
	fsck(t, s, true)
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty chunk after fsck --repair: %v", err)
	}
	if rep := fsck(t, s, false); len(rep.Problems) != 0 {
		t.Errorf("fsck after repair: %v", rep.Problems)
	}
}

func chmod(t *testing.T, p string, mode fs.FileMode) {
	t.Helper()
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, p string, mode fs.FileMode) {
	t.Helper()
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	chmod(t, p, mode)
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func rm(t *testing.T, p string) {
	t.Helper()
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// names lists a directory's entries, comma-separated.
func names(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range entries {
		n = append(n, e.Name())
	}
	return strings.Join(n, ",")
}

// tree lists every path under root with its type (not following
// symbolic links), for before/after comparisons.
func tree(t *testing.T, root string) string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		out = append(out, p+":"+d.Type().String())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, " ")
}
