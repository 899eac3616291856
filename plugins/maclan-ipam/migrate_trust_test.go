package ipamplugin

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/disk"
)

// host-local's directory is not maclan's: a cursor planted there as a
// symbolic link or a FIFO is neither followed nor waited on (the old code
// adopted the link's target and blocked on the FIFO), and the leases
// beside them are adopted.
func TestMigrateIgnoresPlantedCursors(t *testing.T) {
	netDir, outside := filepath.Join(t.TempDir(), "net1"), t.TempDir()
	if err := os.Mkdir(netDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(netDir, "10.1.0.2"), "aaa\r\neth0")
	writeTestFile(t, filepath.Join(outside, "cursor"), "10.1.0.200")
	if err := os.Symlink(filepath.Join(outside, "cursor"), filepath.Join(netDir, "last_reserved_ip.0")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(netDir, "last_reserved_ip.1"), 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	if out, code := migrateInProcess(t, "--from-host-local", netDir, "--network", "net1", "--data-dir", dataDir); code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, out)
	}
	st, err := disk.New(dataDir, "net1", disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close() //nolint:errcheck // test store
	err = store.WithLock(context.Background(), st, func() error {
		for _, set := range []string{"0", "1"} {
			if c, err := st.Cursor(context.Background(), set); err != nil || c.IsValid() {
				t.Errorf("cursor %s after migrate: %v, %v; want none", set, c, err)
			}
		}
		l, err := st.Get(context.Background(), netip.MustParseAddr("10.1.0.2"))
		if err != nil || l.ContainerID != "aaa" {
			t.Errorf("adopted lease: %+v, %v", l, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// host-local's lock planted as a FIFO: migrate refuses it, saying why,
// instead of waiting for a writer for ever with nothing to show.
func TestMigrateRefusesPlantedLock(t *testing.T) {
	netDir := filepath.Join(t.TempDir(), "net1")
	if err := os.Mkdir(netDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(netDir, "10.1.0.2"), "aaa\r\neth0")
	if err := syscall.Mkfifo(filepath.Join(netDir, "lock"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := migrateInProcess(t, "--from-host-local", netDir, "--network", "net1", "--data-dir", t.TempDir())
	if code == 0 || !strings.Contains(out, filepath.Join(netDir, "lock")) || !strings.Contains(out, "not a regular file") {
		t.Errorf("migrate with a FIFO lock: exit %d: %s; want a refusal naming the lock", code, out)
	}
}

func migrateInProcess(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	code := runCLI(append([]string{"migrate"}, args...), &out, &out)
	return out.String(), code
}

func writeTestFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// host-local's files are another program's, on a node that may have
// crashed: the parsers accept only what they can honour.
func FuzzHostLocalFiles(f *testing.F) {
	f.Add([]byte("aaa\r\neth0"), "eth0")
	f.Add([]byte("legacy"), "eth0")
	f.Add([]byte("10.1.0.4\n"), "net1")
	f.Add([]byte("::ffff:10.1.0.4"), "eth0")
	f.Add([]byte("a\r\nb\r\nc"), "eth0")
	f.Fuzz(func(t *testing.T, data []byte, ifName string) {
		if len(data) > maxHostLocalLease {
			return // migrate reads no more
		}
		ip := netip.MustParseAddr("10.1.0.2")
		if l, err := parseHostLocalLease(data, ip, ifName); err == nil {
			if store.ValidateAttachment(l.ContainerID, l.IfName) != nil || l.IP != ip {
				t.Fatalf("accepted %+v", l)
			}
		}
		if c, ok := parseHostLocalCursor(data); ok && (!c.IsValid() || c.Zone() != "" || c.Is4In6()) {
			t.Fatalf("accepted cursor %v", c)
		}
	})
}
