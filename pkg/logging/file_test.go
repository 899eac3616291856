package logging

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHostileLogFileRefused: each logFile below must be refused with one
// warning on stderr that names the field and the reason, the logger must
// still work (on stderr), and nothing may be written through the path.
func TestHostileLogFileRefused(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "outside.log")
	const before = "precious\n"
	if err := os.WriteFile(outside, []byte(before), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	link := filepath.Join(dir, "link.log")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	open := t.TempDir()
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	inOpen := filepath.Join(open, "x.log")
	if err := os.WriteFile(inOpen, []byte(before), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.log")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// A reader keeps an old-style blocking open of the FIFO from hanging
	// the test, and shows whether anything was written into it.
	reader, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	noSuffix := filepath.Join(dir, "ld.so.preload")
	dirLog := filepath.Join(dir, "d.log")
	if err := os.Mkdir(dirLog, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)

	for _, tc := range []struct{ path, reason string }{
		{link, "symbolic link"},
		{"rel.log", "not an absolute path"},
		{inOpen, "writable by group or others"},
		{fifo, "not a regular file"},
		{noSuffix, `must end in \".log\"`},
		{dirLog, "not a regular file"},
	} {
		var stderr bytes.Buffer
		log, closeFn := New(Options{File: tc.path, Stderr: &stderr}, "network", "n1")
		log.Info("routine")
		log.Warn("odd")
		closeFn()
		lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
		if len(lines) != 2 || !strings.Contains(lines[0], `field \"logFile\"`) || !strings.Contains(lines[0], tc.reason) || !strings.Contains(lines[1], "msg=odd") {
			t.Errorf("logFile %s: stderr got %q, want one warning naming logFile and %q, then the warning logged", tc.path, stderr.String(), tc.reason)
		}
	}
	for _, path := range []string{outside, inOpen} {
		if b, err := os.ReadFile(path); err != nil || string(b) != before {
			t.Errorf("%s: got %q, %v; want it unchanged", path, b, err)
		}
	}
	for _, path := range []string{filepath.Join(dir, "rel.log"), noSuffix} {
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: got %v, want no such file", path, err)
		}
	}
	if n, err := reader.Read(make([]byte, 64)); n != 0 {
		t.Errorf("the FIFO got %d bytes (%v), want none", n, err)
	}
}

// TestForeignOwnedDirRefused needs root to give a directory away.
func TestForeignOwnedDirRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown a directory to another user")
	}
	dir := filepath.Join(t.TempDir(), "theirs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if f, err := OpenFile(filepath.Join(dir, "x.log")); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		if f != nil {
			f.Close()
		}
		t.Errorf("OpenFile in a directory owned by uid 65534: got %v, want a refusal naming the owner", err)
	}
}

func TestLogFileCreated0600AndAppended(t *testing.T) {
	path := filepath.Join(t.TempDir(), "calls.log")
	for _, msg := range []string{"first", "second"} {
		log, closeFn := New(Options{File: path})
		log.Info(msg)
		closeFn()
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&^0o600 != 0 {
		t.Errorf("mode %v, want at most 0600", fi.Mode())
	}
	b, _ := os.ReadFile(path)
	if got := string(b); !strings.Contains(got, "msg=first") || !strings.Contains(got, "msg=second") {
		t.Errorf("log file got %q, want both lines", got)
	}
}
