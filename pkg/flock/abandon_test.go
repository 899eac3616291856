package flock

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openLockFile opens path as its own open file description: flock(2) locks
// belong to open file descriptions, so each of these contends with the
// others as another process would.
func openLockFile(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestLockAfterTimeoutExcludes: a wait abandoned at its deadline must not
// touch the lock that a later Wait on the same file obtains. Each round a
// holder (a second open file description) makes a Wait time out, lets go,
// and the file is locked again; a third opener must then be shut out.
func TestLockAfterTimeoutExcludes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	mine, holder, third := openLockFile(t, path), openLockFile(t, path), openLockFile(t, path)
	for round := range 1000 {
		if err := flock(int(holder.Fd()), syscall.LOCK_EX); err != nil {
			t.Fatalf("round %d: holder: %v", round, err)
		}
		if err := Wait(mine, time.Now().Add(time.Millisecond), nil); !errors.Is(err, ErrTimeout) {
			t.Fatalf("round %d: Wait while held: got %v, want ErrTimeout", round, err)
		}
		if err := flock(int(holder.Fd()), syscall.LOCK_UN); err != nil {
			t.Fatalf("round %d: holder unlock: %v", round, err)
		}
		if err := Wait(mine, time.Now().Add(time.Minute), nil); err != nil {
			t.Fatalf("round %d: Wait after the holder left: %v", round, err)
		}
		// The abandoned wait may act a moment later: look a few times,
		// letting other goroutines run in between.
		for range 10 {
			err := flock(int(third.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			if err == nil {
				t.Fatalf("round %d: a third opener took the lock that Wait had returned", round)
			}
			if !errors.Is(err, syscall.EWOULDBLOCK) {
				t.Fatalf("round %d: third opener: %v", round, err)
			}
			runtime.Gosched()
		}
		if err := flock(int(mine.Fd()), syscall.LOCK_UN); err != nil {
			t.Fatalf("round %d: unlock: %v", round, err)
		}
	}
}

// TestContendedWaitHandsLockToCaller: a Wait that had to block leaves the
// lock on the caller's descriptor, which is close-on-exec and releases it
// with LOCK_UN as before.
func TestContendedWaitHandsLockToCaller(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	mine, holder, third := openLockFile(t, path), openLockFile(t, path), openLockFile(t, path)
	if err := flock(int(holder.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- Wait(mine, time.Now().Add(time.Minute), nil) }()
	waitForBlockedWaiter(t, path, errc)
	if err := flock(int(holder.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if fl, err := unix.FcntlInt(mine.Fd(), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("descriptor flags after a contended Wait: %#x, %v; want FD_CLOEXEC", fl, err)
	}
	if err := flock(int(third.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("third opener while the lock is held: got %v, want EWOULDBLOCK", err)
	}
	if err := flock(int(mine.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := flock(int(third.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("third opener after the caller's LOCK_UN: %v", err)
	}
}

// waitForBlockedWaiter returns once /proc/locks shows a process blocked on
// a flock of path's inode (lines "N: -> FLOCK ... MAJ:MIN:INODE ..."), or
// fails the test if the Wait ended first.
func waitForBlockedWaiter(t *testing.T, path string, errc <-chan error) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	suffix := ":" + strconv.FormatUint(st.Ino, 10)
	for {
		b, err := os.ReadFile("/proc/locks")
		if err != nil {
			t.Skipf("no /proc/locks to see the waiter: %v", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 6 && f[1] == "->" && f[2] == "FLOCK" && strings.HasSuffix(f[6], suffix) {
				return
			}
		}
		select {
		case err := <-errc:
			t.Fatalf("Wait returned %v while the lock was held", err)
		default:
			runtime.Gosched()
		}
	}
}

func TestOpenRefusesLinksAndSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{link, fifo, dir} {
		if unlock, err := Lock(path, time.Second); err == nil {
			unlock()
			t.Errorf("Lock(%s): got no error, want a refusal", path)
		}
	}
	f, err := Open(filepath.Join(dir, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("Open: descriptor flags %#x, %v; want FD_CLOEXEC", fl, err)
	}
	if fi, err := os.Stat(f.Name()); err != nil || fi.Mode().Perm() != 0o600&^umask() {
		t.Errorf("Open: created %v, %v; want mode 0600 less the umask", fi.Mode(), err)
	}
}

func umask() os.FileMode {
	m := unix.Umask(0)
	unix.Umask(m)
	return os.FileMode(m)
}
