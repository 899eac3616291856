package main

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/maclan-cni/maclan/pkg/netnstest"
)

// threadNetNS is the inode of the calling thread's network namespace.
func threadNetNS(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestInNetNS: fn runs with the thread in the target namespace, and the
// thread is back where it was afterwards, on the same thread.
func TestInNetNS(t *testing.T) {
	netnstest.RequireRoot(t)
	target := netnstest.NewNS(t)
	var want unix.Stat_t
	if err := unix.Fstat(int(target.Fd()), &want); err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread() // as main's init does
	defer runtime.UnlockOSThread()
	home, tid := threadNetNS(t), unix.Gettid()
	var inside uint64
	if err := inNetNS(target, func() error { inside = threadNetNS(t); return nil }); err != nil {
		t.Fatal(err)
	}
	if inside != want.Ino {
		t.Errorf("fn ran in netns %d, want the target's %d", inside, want.Ino)
	}
	if got := threadNetNS(t); got != home || unix.Gettid() != tid {
		t.Errorf("after inNetNS: thread %d in netns %d, want thread %d back in %d", unix.Gettid(), got, tid, home)
	}
}

// TestInNetNSBadTarget: a namespace that cannot be entered is an error,
// fn does not run, and the thread stays where it was.
func TestInNetNSBadTarget(t *testing.T) {
	netnstest.RequireRoot(t)
	n := netnstest.NewNS(t)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	home := threadNetNS(t)
	ran := false
	err := inNetNS(n, func() error { ran = true; return nil })
	if err == nil || ran {
		t.Errorf("got %v (fn ran: %v), want an error and fn not run", err, ran)
	}
	if got := threadNetNS(t); got != home {
		t.Errorf("thread in netns %d, want %d", got, home)
	}
}
