package ipamplugin

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestFirstBurstOfABootSweepsOnce: the first ADDs after a reboot often come
// at once (a node's pods restarting). Every one of them finds the sweep of
// the earlier boot not yet done before it takes the store's lock; only the
// first to get the lock may sweep, and the others must find the marker it
// wrote before giving the lock up. The test holds the lock until every ADD
// of the burst waits for it.
func TestFirstBurstOfABootSweepsOnce(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "ipam.log")
	conf := netconf("1.0.0", dir, `"ranges":[[{"subnet":"10.1.0.0/24"}]]`,
		fmt.Sprintf(`"logFile":%q,"logLevel":"info",`, logFile))
	for i := range 3 {
		ok(t, call{cmd: "ADD", id: fmt.Sprintf("old%d", i), conf: conf, env: []string{"MACLAN_TEST_BOOT_ID=boot-a"}})
	}

	lock, err := os.OpenFile(filepath.Join(dir, "net1", "lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	const burst = 6
	var wg sync.WaitGroup
	outs := make([]outcome, burst)
	for i := range burst {
		wg.Go(func() {
			outs[i] = run(t, call{cmd: "ADD", id: fmt.Sprintf("new%d", i), conf: conf, env: []string{"MACLAN_TEST_BOOT_ID=boot-b"}})
		})
	}
	ended := make(chan struct{})
	go func() { wg.Wait(); close(ended) }()
	waitForLockWaiters(t, lock, burst, ended)
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	<-ended
	for i, o := range outs {
		if o.code != 0 {
			t.Fatalf("ADD new%d: exit %d: %s %s", i, o.code, o.stdout, o.stderr)
		}
	}

	log, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	var sweeps []string
	for line := range strings.Lines(string(log)) {
		if strings.Contains(line, "released the leases this host took in an earlier boot") && strings.Contains(line, "container=new") {
			sweeps = append(sweeps, line)
		}
	}
	if len(sweeps) != 1 || !strings.Contains(sweeps[0], "leases=3") {
		t.Errorf("got %d sweeps in the burst, want one that released 3 leases:\n%s", len(sweeps), strings.Join(sweeps, ""))
	}
	if n := leaseFiles(t, dir); n != burst {
		t.Errorf("%d leases after the burst, want the burst's %d", n, burst)
	}
}

// waitForLockWaiters waits until n processes wait for the flock(2) lock
// that f holds, as /proc/locks lists them; ended closing first (a process
// that did not wait) fails the test.
func waitForLockWaiters(t *testing.T, f *os.File, n int, ended <-chan struct{}) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	// /proc/locks names the file as major:minor:inode, in hex for the
	// device numbers.
	id := fmt.Sprintf(":%d ", st.Ino)
	for {
		waiting := 0
		pl, err := os.Open("/proc/locks")
		if err != nil {
			t.Skipf("no /proc/locks: %v", err)
		}
		sc := bufio.NewScanner(pl)
		for sc.Scan() {
			if line := sc.Text(); strings.Contains(line, "->") && strings.Contains(line, id) {
				waiting++
			}
		}
		pl.Close()
		if waiting >= n {
			return
		}
		// /proc/locks has no event to wait on: look again shortly.
		select {
		case <-ended:
			t.Fatalf("the ADDs ended while the test held the lock (%d of %d were waiting)", waiting, n)
		case <-time.After(time.Millisecond):
		}
	}
}
