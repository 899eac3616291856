package shim

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/safefs"
)

func testShim(stateDir string) *Shim {
	return &Shim{Master: "eth9", StateDir: stateDir, Timeout: time.Second}
}

// The shim's lock refuses a state directory (or master directory) that
// someone else could write or that is a symbolic link, naming it.
func TestLockRefusesUntrustedStateDir(t *testing.T) {
	for _, tc := range []struct {
		name    string
		plant   func(t *testing.T, root string) (stateDir, bad string)
		mention string
	}{
		{"world-writable state directory", func(t *testing.T, root string) (string, string) {
			d := filepath.Join(root, "netns-1")
			mkdirMode(t, d, 0o777|fs.ModeSticky)
			return d, d
		}, "mode 1777"},
		{"symlinked state directory", func(t *testing.T, root string) (string, string) {
			d := filepath.Join(root, "netns-1")
			if err := os.Symlink(t.TempDir(), d); err != nil {
				t.Fatal(err)
			}
			return d, d
		}, "symbolic link"},
		{"world-writable base directory", func(t *testing.T, root string) (string, string) {
			base := filepath.Join(root, "shim")
			mkdirMode(t, base, 0o777)
			d := filepath.Join(base, "netns-1")
			mkdirMode(t, d, 0o700)
			return d, base
		}, "mode 0777"},
		{"symlinked master directory", func(t *testing.T, root string) (string, string) {
			d := filepath.Join(root, "netns-1")
			mkdirMode(t, d, 0o700)
			if err := os.Symlink(t.TempDir(), filepath.Join(d, "eth9")); err != nil {
				t.Fatal(err)
			}
			return d, filepath.Join(d, "eth9")
		}, "symbolic link"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stateDir, bad := tc.plant(t, t.TempDir())
			unlock, err := testShim(stateDir).lock()
			if err == nil {
				unlock()
				t.Fatalf("lock in %s succeeded, want a refusal naming %s", stateDir, bad)
			}
			if !errors.Is(err, safefs.ErrUntrusted) || !strings.Contains(err.Error(), bad+" ") || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("got %v; want ErrUntrusted naming %s and %q", err, bad, tc.mention)
			}
		})
	}
}

// A fresh state directory (as on a booted node's /run) is made and used.
func TestLockMakesStateDir(t *testing.T) {
	unlock, err := testShim(filepath.Join(t.TempDir(), "maclan", "shim", "netns-1")).lock()
	if err != nil {
		t.Fatal(err)
	}
	unlock()
}

// A symbolic link planted where writeRecord puts its temporary file is
// replaced, not written through.
func TestWriteRecordDoesNotFollowTemp(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	target := filepath.Join(outside, "victim")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := filepath.Join(dir, "c1:eth0")
	if err := os.Symlink(target, rec+".tmp"); err != nil {
		t.Fatal(err)
	}
	if err := writeRecord(rec, []netip.Addr{netip.MustParseAddr("10.0.0.2")}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "keep" {
		t.Errorf("the symlink's target now holds %q, %v", b, err)
	}
	if ips, err := readRecord(rec); err != nil || len(ips) != 1 || ips[0].String() != "10.0.0.2" {
		t.Errorf("record: %v, %v", ips, err)
	}
}

// Records and the lease token planted as symbolic links or FIFOs are
// refused without blocking, and the release callback never sees a token
// read through a link.
func TestPlantedRecordsRefused(t *testing.T) {
	stateDir, outside := t.TempDir(), t.TempDir()
	sh := testShim(stateDir)
	var released [][]byte
	sh.Release = func(token []byte) error { released = append(released, token); return nil }
	if err := os.Mkdir(sh.dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(outside, "record")
	if err := os.WriteFile(target, []byte("10.0.0.9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(sh.dir(), "c1:eth0")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(sh.dir(), "c2:eth0")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{link, fifo} {
		if ips, err := readRecord(p); !errors.Is(err, safefs.ErrNotRegular) {
			t.Errorf("readRecord(%s): %v, %v; want ErrNotRegular", p, ips, err)
		}
	}
	if names, err := records(sh.dir()); err != nil || len(names) != 0 {
		t.Errorf("records: %v, %v; want none (neither is a record)", names, err)
	}
	if m, ok := FindMaster(stateDir, "c1:eth0"); ok {
		t.Errorf("FindMaster found a symlinked record under %s", m)
	}
	if err := os.Symlink(target, sh.leaseFile()); err != nil {
		t.Fatal(err)
	}
	if err := sh.release(); !errors.Is(err, safefs.ErrNotRegular) || len(released) != 0 {
		t.Errorf("release through a symlinked lease file: %v, released %q", err, released)
	}
}

func mkdirMode(t *testing.T, p string, mode fs.FileMode) {
	t.Helper()
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// The record is read from /run, which a crash or a hand edit may leave
// damaged: parseRecord must never accept what writeRecord cannot write.
func FuzzParseRecord(f *testing.F) {
	f.Add([]byte("10.0.0.2\nfd00::2\n"))
	f.Add([]byte(""))
	f.Add([]byte("fe80::1%eth0\n"))
	f.Add([]byte("10.0.0.2 junk"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxRecordSize {
			return // readRecord reads no more
		}
		ips, err := parseRecord("rec", data)
		if err != nil {
			return
		}
		var b strings.Builder
		for _, ip := range ips {
			if !ip.IsValid() || ip.Zone() != "" {
				t.Fatalf("accepted %v", ip)
			}
			b.WriteString(ip.String() + "\n")
		}
		again, err := parseRecord("rec", []byte(b.String()))
		if err != nil || len(again) != len(ips) {
			t.Fatalf("re-reading %v gives %v, %v", ips, again, err)
		}
	})
}
