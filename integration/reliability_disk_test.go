//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// fullDiskSize is the size of the tmpfs that holds the IPAM's data
// directory: a few dual-stack attachments fit in it.
const fullDiskSize = "128k"

// TestReliabilityFullDisk puts the IPAM's data directory on a tiny tmpfs and
// ADDs containers until the disk is full. The ADD that finds it full fails
// with an error that says so and leaves no link, no lease and no truncated
// file; STATUS reports code 50; DEL still works on the full disk; and once
// space is freed, ADD works again and no earlier lease has been lost.
func TestReliabilityFullDisk(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC,
		"size="+fullDiskSize+",nr_inodes=4096,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", mnt, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})

	n := newNet(t)
	n.dataDir = mnt
	list := n.list("1.1.0", n.mainConf())
	status := func() error {
		return theLab.inHost(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
			defer cancel()
			return n.cni.GetStatusNetworkList(ctx, list)
		})
	}

	held := map[string][]string{} // container ID -> addresses, of every ADD that succeeded
	var live []*attachment
	var full *attachment
	var fullErr error
	for i := 0; i < 100 && full == nil; i++ {
		a := n.attach(list, newContainer(t), "eth0")
		res, err := a.addNoCleanup()
		if err != nil {
			full, fullErr = a, err
			break
		}
		a.ensureCleanup()
		live = append(live, a)
		ips := make([]string, 0, 2)
		for _, ip := range resultAddrs(res) {
			ips = append(ips, ip.String())
		}
		slices.Sort(ips)
		held[a.rt.ContainerID] = ips
	}
	if full == nil {
		t.Fatalf("100 ADDs fitted in a %s tmpfs; want the disk full first", fullDiskSize)
	}
	full.ensureCleanup()
	figure(t, "%d dual-stack ADDs fitted in a %s tmpfs; the next failed with code %d: %v", len(live), fullDiskSize, cniCode(fullErr), fullErr)

	// Each ADD on the full disk fails saying so and leaves no link and no
	// damaged file; after the runtime's DEL (which a runtime sends after a
	// failed ADD) the store holds exactly the earlier leases.
	var halfMade []string
	failedADD := func(a *attachment, err error) {
		t.Helper()
		// Code 11: the store cannot be written now, and a retry after
		// space is freed succeeds (checked below).
		wantCNIError(t, err, types.ErrTryAgainLater, "no space left on device")
		wantOnlyLoopback(t, a.ctr)
		if ips := n.leasesByOwner()[a.rt.ContainerID]; len(ips) > 0 {
			halfMade = append(halfMade, fmt.Sprintf("%s holds %v", a.rt.ContainerID, ips))
		}
		_, out, _ := ipamCLI(t, "fsck", "--data-dir", n.dataDir, "--network", n.name)
		for _, p := range fsckProblems(out) {
			if strings.Contains(p, "damaged") || strings.Contains(p, "corrupt") {
				t.Errorf("after a failed ADD on the full disk: %s", p)
			}
		}
		if err := a.del(); err != nil {
			t.Errorf("the runtime's DEL after the failed ADD, on the full disk: %v", err)
		}
		wantStoreIntact(t, n, held)
	}
	failedADD(full, fullErr)
	for range 3 {
		a := n.attach(list, newContainer(t), "eth0")
		_, err := a.add()
		failedADD(a, err)
	}
	figure(t, "failed ADDs that held a lease until the runtime's DEL: %d of 4 %v", len(halfMade), halfMade)
	t.Run("a failed ADD holds no lease", func(t *testing.T) {
		if len(halfMade) > 0 {
			t.Errorf("failed ADDs left leases behind: %v", halfMade)
		}
	})
	err := status()
	figure(t, "STATUS on the full disk: code %d: %v", cniCode(err), err)
	t.Run("STATUS on the full disk reports 50", func(t *testing.T) {
		wantCNIError(t, err, types.ErrPluginNotAvailable)
	})

	// DEL of a container that goes away works on the full disk too.
	gone := live[0]
	if err := gone.del(); err != nil {
		t.Errorf("DEL on the full disk: %v", err)
	}
	delete(held, gone.rt.ContainerID)
	live = live[1:]
	wantStoreIntact(t, n, held)

	// Free space: the tmpfs grows. ADD works again and the old leases stay.
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_REMOUNT|syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC,
		"size=4m"); err != nil {
		t.Fatalf("grow tmpfs: %v", err)
	}
	if err := status(); err != nil {
		t.Errorf("STATUS after space was freed: %v", err)
	}
	for _, a := range []*attachment{full, n.attach(list, newContainer(t), "eth0")} {
		res := a.mustAdd()
		var ips []string
		for _, ip := range resultAddrs(res) {
			ips = append(ips, ip.String())
		}
		slices.Sort(ips)
		held[a.rt.ContainerID] = ips
		wantPing(t, a.ctr, gw4)
		live = append(live, a)
	}
	wantStoreIntact(t, n, held)
	for _, a := range live {
		if err := a.del(); err != nil {
			t.Errorf("DEL %s: %v", a.rt.ContainerID, err)
		}
	}
	n.wantNoLeases()
	n.wantFsckClean()
}

// wantStoreIntact checks the store against the attachments that should hold
// leases: exactly those leases, each file whole (fsck finds no damage), and
// no temporary file left behind.
func wantStoreIntact(t *testing.T, n *testNet, held map[string][]string) {
	t.Helper()
	got := n.leasesByOwner()
	if fmt.Sprint(got) != fmt.Sprint(held) {
		t.Errorf("leases %v, want %v", got, held)
	}
	code, out, errOut := ipamCLI(t, "fsck", "--data-dir", n.dataDir, "--network", n.name)
	if code != 0 {
		t.Errorf("fsck: exit %d: %s %s", code, out, errOut)
	}
	for _, p := range treeFiles(t, filepath.Join(n.dataDir, n.name)) {
		if strings.Contains(filepath.Base(p), ".tmp-") {
			t.Errorf("temporary file %s left in the store", p)
		}
	}
}
