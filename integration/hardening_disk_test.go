//go:build integration

package integration

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// hardenedNet is a network whose data directory sits in a directory of the
// test's own, beside an "outside" directory that must never be written.
func hardenedNet(t *testing.T) (n *testNet, outside string) {
	t.Helper()
	if ipamType != "maclan-ipam" {
		t.Skip("maclan-ipam's disk store only")
	}
	root := t.TempDir()
	n = newNet(t)
	n.dataDir = filepath.Join(root, "data")
	outside = filepath.Join(root, "outside")
	for _, d := range []string{n.dataDir, outside} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return n, outside
}

// addAddrs runs ADD and returns the addresses it gave, sorted.
func addAddrs(t *testing.T, a *attachment) []string {
	t.Helper()
	res, err := a.add()
	if err != nil {
		t.Fatalf("ADD %s: %v", a.rt.ContainerID, err)
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, ip := range resultAddrs(cur) {
		ips = append(ips, ip.String())
	}
	slices.Sort(ips)
	return ips
}

// A data directory that someone else can write, or that is a symbolic
// link, is refused by ADD with code 11 and a message naming the directory
// and the rule; the leases already held survive, and ADD works again once
// the directory is fixed.
func TestHardeningDiskUntrustedDataDir(t *testing.T) {
	n, outside := hardenedNet(t)
	list := n.list("1.1.0", n.mainConf())
	held := map[string][]string{}
	c1 := n.attach(list, newContainer(t), "eth0")
	held[c1.rt.ContainerID] = addAddrs(t, c1)

	t.Run("world-writable dataDir", func(t *testing.T) {
		if err := os.Chmod(n.dataDir, 0o777|os.ModeSticky); err != nil {
			t.Fatal(err)
		}
		ctr := newContainer(t)
		_, err := n.attach(list, ctr, "eth0").add()
		figure(t, "ADD with a 1777 dataDir: code %d: %v", cniCode(err), err)
		wantCNIError(t, err, types.ErrTryAgainLater, n.dataDir, "mode 1777", "writable by group or others")
		wantOnlyLoopback(t, ctr)
		if err := os.Chmod(n.dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if got := n.leasesByOwner(); !mapsEqual(got, held) {
			t.Errorf("leases after the refusal: %v, want %v", got, held)
		}
	})

	t.Run("symlinked dataDir", func(t *testing.T) {
		link := filepath.Join(filepath.Dir(n.dataDir), "link")
		if err := os.Symlink(n.dataDir, link); err != nil {
			t.Fatal(err)
		}
		via := newNet(t)
		via.name, via.dataDir = n.name, link
		viaList := via.list("1.1.0", via.mainConf())
		ctr := newContainer(t)
		_, err := via.attach(viaList, ctr, "eth0").add()
		figure(t, "ADD with a symlinked dataDir: code %d: %v", cniCode(err), err)
		wantCNIError(t, err, types.ErrTryAgainLater, link, "symbolic link")
		wantOnlyLoopback(t, ctr)
	})

	t.Run("lock file planted as a symlink", func(t *testing.T) {
		other := newNet(t)
		other.dataDir = n.dataDir
		if err := os.Mkdir(filepath.Join(other.dataDir, other.name), 0o700); err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(outside, "created-by-root")
		if err := os.Symlink(target, filepath.Join(other.dataDir, other.name, "lock")); err != nil {
			t.Fatal(err)
		}
		_, err := other.attach(other.list("1.1.0", other.mainConf()), newContainer(t), "eth0").add()
		wantCNIError(t, err, types.ErrTryAgainLater, "lock", "symbolic link")
		if _, err := os.Lstat(target); err == nil {
			t.Errorf("ADD created %s through the planted lock symlink", target)
		}
	})

	// No address lost: the refused calls changed nothing, and ADD works
	// again beside the old lease.
	c2 := n.attach(list, newContainer(t), "eth0")
	held[c2.rt.ContainerID] = addAddrs(t, c2)
	wantStoreIntact(t, n, held)
	if files := treeFiles(t, outside); len(files) != 1 {
		t.Errorf("files appeared outside the data directory: %v", files)
	}
}

// Names planted inside a store made before the directory was checked (or
// by root by mistake): a bitmap chunk and the next leases as symbolic links
// to files outside, the cursors as FIFOs. ADD writes nothing through them,
// does not block on the FIFOs, and takes other addresses; fsck --repair
// moves the planted leases aside; no address held before is lost.
func TestHardeningDiskPlantedNames(t *testing.T) {
	n, outside := hardenedNet(t)
	list := n.list("1.1.0", n.mainConf())
	held := map[string][]string{}
	c1 := n.attach(list, newContainer(t), "eth0")
	held[c1.rt.ContainerID] = addAddrs(t, c1)

	store := filepath.Join(n.dataDir, n.name)
	victims := map[string][]byte{}
	plantLink := func(rel string, content []byte) {
		t.Helper()
		target := filepath.Join(outside, filepath.Base(filepath.Dir(rel))+"-"+filepath.Base(rel))
		if err := os.WriteFile(target, content, 0o600); err != nil {
			t.Fatal(err)
		}
		victims[target] = content
		p := filepath.Join(store, rel)
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	var planted []string
	for _, a := range held[c1.rt.ContainerID] {
		ip := netip.MustParseAddr(a)
		base := ip.As16()
		base[14], base[15] = 0, 0
		chunk := netip.AddrFrom16(base).String()
		if ip.Is4() {
			b4 := ip.As4()
			chunk = netip.AddrFrom4([4]byte{b4[0], b4[1], 0, 0}).String()
		}
		orig, err := os.ReadFile(filepath.Join(store, "bitmap", chunk))
		if err != nil {
			t.Fatal(err)
		}
		plantLink(filepath.Join("bitmap", chunk), orig)
		plantLink(filepath.Join("leases", ip.Next().String()), []byte("keep"))
		planted = append(planted, ip.Next().String())
	}
	cursors, err := os.ReadDir(filepath.Join(store, "cursor"))
	if err != nil || len(cursors) == 0 {
		t.Fatalf("cursors: %v, %v", cursors, err)
	}
	for _, c := range cursors {
		p := filepath.Join(store, "cursor", c.Name())
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	c2 := n.attach(list, newContainer(t), "eth0")
	got := addAddrs(t, c2)
	figure(t, "ADD beside planted names %v: got %v", planted, got)
	for _, p := range planted {
		if slices.Contains(got, p) {
			t.Errorf("ADD handed out %s, whose lease name is a planted symlink", p)
		}
	}
	held[c2.rt.ContainerID] = got
	for target, content := range victims {
		if b, err := os.ReadFile(target); err != nil || !bytes.Equal(b, content) {
			t.Errorf("%s was written through its planted symlink: %v", target, err)
		}
	}
	for _, dir := range []string{"bitmap", "cursor"} {
		entries, err := os.ReadDir(filepath.Join(store, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !e.Type().IsRegular() {
				t.Errorf("%s/%s is still %v after ADD; want it rewritten as a regular file", dir, e.Name(), e.Type())
			}
		}
	}
	if code, out, errOut := ipamCLI(t, "fsck", "--data-dir", n.dataDir, "--network", n.name, "--repair"); code != 0 {
		t.Errorf("fsck --repair: exit %d: %s %s", code, out, errOut)
	}
	wantStoreIntact(t, n, held)
	if files := treeFiles(t, outside); len(files) != len(victims)+1 {
		t.Errorf("files outside the data directory: %v, want only the %d planted targets", files, len(victims))
	}
}
