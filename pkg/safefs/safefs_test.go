package safefs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestOpenRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
		flag int
	}{
		{"symlink, read", link, os.O_RDONLY},
		{"symlink, create", link, os.O_RDWR | os.O_CREATE},
		{"symlink to nowhere, create", filepath.Join(dir, "dangling"), os.O_RDWR | os.O_CREATE},
		// Without O_NONBLOCK both of these would wait for the other end.
		{"FIFO, read", fifo, os.O_RDONLY},
		{"FIFO, write", fifo, os.O_WRONLY},
		{"directory", dir, os.O_RDONLY},
		{"device", os.DevNull, os.O_RDONLY},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "symlink to nowhere, create" {
				if err := os.Symlink(filepath.Join(dir, "made-by-root"), tc.path); err != nil {
					t.Fatal(err)
				}
			}
			f, err := Open(tc.path, tc.flag, 0o600)
			if err == nil {
				_ = f.Close()
				t.Fatalf("Open(%s) succeeded", tc.path)
			}
			if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), tc.path) {
				t.Errorf("got %v; want ErrNotRegular naming %s", err, tc.path)
			}
		})
	}
	if _, err := os.Lstat(filepath.Join(dir, "made-by-root")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a symlink's target was created: %v", err)
	}
}

func TestOpenRegular(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	f, err := Open(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("hello"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := ReadFile(p, 5)
	if err != nil || string(b) != "hello" {
		t.Errorf("ReadFile: %q, %v", b, err)
	}
	if _, err := ReadFile(p, 4); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadFile over the limit: %v; want ErrTooLarge", err)
	}
	if _, err := ReadFile(p+"-missing", 4); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile of a missing file: %v; want ErrNotExist", err)
	}
}

func TestCheckDir(t *testing.T) {
	root := t.TempDir()
	mk := func(name string, mode fs.FileMode) string {
		p := filepath.Join(root, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := mk("good", 0o755)
	link := filepath.Join(root, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, want string
	}{
		{good, ""},
		{mk("sticky", 0o777|fs.ModeSticky), "mode 1777"},
		{mk("group", 0o770), "mode 0770"},
		{link, "symbolic link"},
		{file, "not a directory"},
	} {
		err := CheckDir(tc.path)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("CheckDir(%s): %v", tc.path, err)
		case tc.want != "" && (!errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("CheckDir(%s): %v; want ErrUntrusted naming it and %q", tc.path, err, tc.want)
		}
	}
	if os.Geteuid() == 0 {
		other := mk("other", 0o755)
		if err := os.Chown(other, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if err := CheckDir(other); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "uid 65534") {
			t.Errorf("CheckDir of a directory of uid 65534: %v", err)
		}
	}
}

// MkdirAll checks what it made and the directory asked for, not the
// existing parents (a test's temporary directory sits in a sticky /tmp).
func TestMkdirAll(t *testing.T) {
	root := t.TempDir()
	if err := MkdirAll(filepath.Join(root, "a", "b"), 0o700); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(root, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(open, 0o700); !errors.Is(err, ErrUntrusted) {
		t.Errorf("MkdirAll of an existing 0777 directory: %v; want ErrUntrusted", err)
	}
	if err := MkdirAll(filepath.Join(open, "sub"), 0o700); err != nil {
		t.Errorf("MkdirAll under an existing parent, which is the operator's: %v", err)
	}
}
