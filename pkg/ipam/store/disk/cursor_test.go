package disk

import (
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestCursorRewrittenInPlace(t *testing.T) {
	dataDir := t.TempDir()
	s := open(t, dataDir)
	path := filepath.Join(dataDir, "net1", cursorDir, "0")
	set := func(ip string) {
		do(t, s, func() error { return s.SetCursor(bg, "0", netip.MustParseAddr(ip)) })
	}
	get := func() netip.Addr {
		var ip netip.Addr
		do(t, s, func() error {
			var err error
			ip, err = s.Cursor(bg, "0")
			return err
		})
		return ip
	}

	set("10.0.0.200")
	first := inode(t, path)
	for _, ip := range []string{"10.0.0.3", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff", "10.0.0.4"} {
		set(ip)
		if got := get(); got.String() != ip {
			t.Errorf("cursor %s, want %s", got, ip)
		}
		if inode(t, path) != first {
			t.Errorf("setting the cursor to %s made a new file; want the one there rewritten in place", ip)
		}
	}

	// A cursor of an older format (unpadded) is replaced once, then
	// rewritten in place.
	if err := os.WriteFile(path, []byte("10.0.0.9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	set("10.0.0.5")
	if b, _ := os.ReadFile(path); len(b) != cursorSize {
		t.Errorf("cursor file of %d bytes after a write, want %d", len(b), cursorSize)
	}
}

func TestCursorNeverWrittenThroughALink(t *testing.T) {
	dataDir := t.TempDir()
	s := open(t, dataDir)
	path := filepath.Join(dataDir, "net1", cursorDir, "0")
	do(t, s, func() error { return s.SetCursor(bg, "0", netip.MustParseAddr("10.0.0.2")) })
	target := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(target, make([]byte, cursorSize), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, plant := range map[string]func() error{
		"hard link":     func() error { return os.Link(target, path) },
		"symbolic link": func() error { return os.Symlink(target, path) },
	} {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := plant(); err != nil {
			t.Fatal(err)
		}
		do(t, s, func() error { return s.SetCursor(bg, "0", netip.MustParseAddr("10.0.0.7")) })
		if b, _ := os.ReadFile(target); string(b) != string(make([]byte, cursorSize)) {
			t.Errorf("%s: the cursor was written through it into %s: %q", name, target, b)
		}
		if fi, err := os.Lstat(path); err != nil || !fi.Mode().IsRegular() || fi.Sys().(*syscall.Stat_t).Nlink != 1 {
			t.Errorf("%s: not replaced by a cursor file of its own: %v, %v", name, fi, err)
		}
	}
}
