//go:build integration

package integration

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// lockTimeout is the IPAM's lockTimeout in these tests: short, so that a
// stuck lock is reported quickly. The tests only check the code.
const lockTimeout = "300ms"

// TestReliabilityLockHolder: while another process holds the store's lock
// and does not let go (alive but stuck, or a real maclan-ipam frozen with
// SIGSTOP in the middle of an ADD), ADD and DEL through maclan fail with code
// 11 within the lock time-out instead of hanging; once the holder dies
// (SIGKILL), its lock goes with it and the next ADD succeeds.
func TestReliabilityLockHolder(t *testing.T) {
	n := newNet(t)
	conf := n.mainConf()
	conf["ipam"].(map[string]any)["lockTimeout"] = lockTimeout
	list := n.list("1.1.0", conf)
	c1 := newContainer(t)
	a1 := n.attach(list, c1, "eth0")
	a1.mustAdd()
	lockFile := filepath.Join(n.dataDir, n.name, "lock")

	stuckADD := func(t *testing.T, what string) {
		t.Helper()
		c := newContainer(t)
		t0 := time.Now()
		_, err := n.attach(list, c, "eth0").add()
		figure(t, "ADD with the lock held by %s: code %d after %.0f ms (lockTimeout %s)", what, cniCode(err), float64(time.Since(t0))/float64(time.Millisecond), lockTimeout)
		t.Logf("ADD: %v", err)
		wantCNIError(t, err, types.ErrTryAgainLater, "lock")
		wantOnlyLoopback(t, c)
	}

	t.Run("holder alive and stuck", func(t *testing.T) {
		holder := holdLock(t, lockFile)
		stuckADD(t, "a stuck process")
		t0 := time.Now()
		err := a1.del()
		figure(t, "DEL with the lock held: code %d after %.0f ms", cniCode(err), float64(time.Since(t0))/float64(time.Millisecond))
		wantCNIError(t, err, types.ErrTryAgainLater, "lock")

		if err := holder.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = holder.Wait() // killed on purpose: the error is the signal
		c := newContainer(t)
		n.attach(list, c, "eth0").mustAdd()
		if err := a1.del(); err != nil {
			t.Errorf("DEL once the holder died: %v", err)
		}
	})

	t.Run("maclan-ipam frozen mid-ADD", func(t *testing.T) {
		fc := newContainer(t)
		frozen, attempts := freezeInsideLock(t, n, conf, fc)
		figure(t, "a real maclan-ipam ADD caught holding the lock and frozen after %d attempts", attempts)
		stuckADD(t, "a frozen maclan-ipam")
		if err := syscall.Kill(frozen.cmd.Process.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = frozen.wait() // killed on purpose
		c := newContainer(t)
		n.attach(list, c, "eth0").mustAdd()
		// The frozen ADD's half-made attachment is the runtime's to delete;
		// a temporary file it was writing is fsck's to remove.
		code, out, _ := ipamCLI(t, "fsck", "--data-dir", n.dataDir, "--network", n.name, "--repair")
		figure(t, "fsck --repair after the kill: exit %d, %v", code, fsckProblems(out))
		if err := n.rawCall(ipamType, "DEL", "frozen", fc, "eth0", netConfBytes(t, conf, n.name)).run(); err != nil {
			t.Errorf("DEL of the killed ADD: %v", err)
		}
		n.wantFsckClean()
	})
}

// holdLock starts a process that takes the flock on file and keeps it until
// it is killed; it returns once the lock is held.
func holdLock(t *testing.T, file string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", `exec 9>>"$1" && flock -x 9 && echo locked && exec cat`, "sh", file)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()      // cat ends on EOF
		_ = cmd.Process.Kill() // if it has not already
		_ = cmd.Wait()         // the exit status of a killed holder says nothing
		_, _ = io.Copy(io.Discard, out)
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "locked" {
		t.Fatalf("lock holder: %q, %v", line, err)
	}
	return cmd
}

// freezeInsideLock runs maclan-ipam ADD for the attachment "frozen"/eth0
// until it catches the process holding the store lock, then stops it with
// SIGSTOP. It returns the stopped call (killed by the caller or at cleanup).
func freezeInsideLock(t *testing.T, n *testNet, conf map[string]any, c *netNS) (*rawCall, int) {
	t.Helper()
	stdin := netConfBytes(t, conf, n.name)
	for attempt := 1; attempt <= 200; attempt++ {
		rc := n.rawCall(ipamType, "ADD", "frozen", c, "eth0", stdin)
		if err := rc.startGuarded(); err != nil {
			t.Fatal(err)
		}
		pid := rc.cmd.Process.Pid
		caught := false
		for !caught && syscall.Kill(pid, 0) == nil && !reaped(pid) {
			if holdsFlock(t, pid) {
				caught = syscall.Kill(pid, syscall.SIGSTOP) == nil && stopped(pid) && holdsFlock(t, pid)
				if !caught {
					_ = syscall.Kill(pid, syscall.SIGCONT) // let it finish; try again
				}
			}
		}
		if caught {
			t.Cleanup(func() {
				if syscall.Kill(pid, syscall.SIGKILL) == nil {
					_ = rc.wait() // killed on purpose
				}
			})
			return rc, attempt
		}
		_ = rc.wait() // it finished: undo and try again
		if err := n.rawCall(ipamType, "DEL", "frozen", c, "eth0", stdin).run(); err != nil {
			t.Fatalf("DEL after an uncaught attempt: %v", err)
		}
	}
	t.Fatal("never caught maclan-ipam holding the lock in 200 attempts")
	return nil, 0
}

// holdsFlock reports whether pid holds a flock, from /proc/locks.
func holdsFlock(t *testing.T, pid int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		t.Fatal(err)
	}
	want := strconv.Itoa(pid)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		// "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; waiters have "->".
		if len(f) >= 5 && f[1] == "FLOCK" && f[4] == want {
			return true
		}
	}
	return false
}

// stopped polls /proc/PID/stat until the process is in state T (stopped).
func stopped(pid int) bool {
	deadline := time.Now().Add(settleTimeout)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		// pid (comm) STATE ...
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) {
			switch b[i+2] {
			case 'T', 't':
				return true
			case 'Z', 'X':
				return false
			}
		}
	}
	return false
}

// reaped reports whether pid is a zombie (it ended, not yet waited for).
func reaped(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z'
}
