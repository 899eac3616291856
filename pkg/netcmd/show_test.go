package netcmd

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/disk"
)

// testSite is a configuration directory, a disk store and a libcni cache,
// all under t.TempDir().
type testSite struct {
	t                       *testing.T
	confDir, dataDir, cache string
}

func newSite(t *testing.T) *testSite {
	root := t.TempDir()
	return &testSite{t: t, confDir: filepath.Join(root, "net.d"), dataDir: filepath.Join(root, "leases"), cache: filepath.Join(root, "cni")}
}

// run runs a command with the site's directories.
func (s *testSite) run(args ...string) (int, string, string) {
	s.t.Helper()
	full := append([]string{args[0], "--conf-dir", s.confDir, "--cni-cache-dir", s.cache}, args[1:]...)
	return runMain(s.t, full...)
}

func (s *testSite) create(name string, args ...string) {
	s.t.Helper()
	if code, _, errOut := runMain(s.t, append([]string{"create", "--conf-dir", s.confDir, "--data-dir", s.dataDir, name}, args...)...); code != 0 {
		s.t.Fatalf("create %s: exit %d %q", name, code, errOut)
	}
}

// lease records a lease in the network's disk store, as maclan-ipam does.
func (s *testSite) lease(network, ip, id, ifName, conflict string) {
	s.t.Helper()
	st, err := disk.New(s.dataDir, network, disk.Options{})
	if err != nil {
		s.t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	l := store.Lease{IP: netip.MustParseAddr(ip), ContainerID: id, IfName: ifName, Created: time.Now(), Conflict: conflict}
	if err := store.WithLock(ctx, st, func() error { return st.Reserve(ctx, l) }); err != nil {
		s.t.Fatal(err)
	}
}

func (s *testSite) release(network, ip string) {
	s.t.Helper()
	st, err := disk.New(s.dataDir, network, disk.Options{})
	if err != nil {
		s.t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if err := store.WithLock(ctx, st, func() error { return st.Release(ctx, netip.MustParseAddr(ip)) }); err != nil {
		s.t.Fatal(err)
	}
}

// cacheEntry writes a libcni cache entry as podman's libcni does.
func (s *testSite) cacheEntry(network, id, ifName, podName, mac string) {
	s.t.Helper()
	entry := map[string]any{
		"kind": "cniCacheV1", "containerId": id, "ifName": ifName, "networkName": network,
		"cniArgs": [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", podName}},
		"result": map[string]any{"cniVersion": "1.0.0", "interfaces": []map[string]string{
			{"name": "eth0", "mac": "aa:aa:aa:aa:aa:aa"}, // a host-side interface of another plugin
			{"name": ifName, "mac": mac, "sandbox": "/run/netns/x"},
		}},
	}
	b, err := json.Marshal(entry)
	if err != nil {
		s.t.Fatal(err)
	}
	dir := filepath.Join(s.cache, "results")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, network+"-"+id+"-"+ifName), b, 0o600); err != nil {
		s.t.Fatal(err)
	}
}

const ctrA = "4f3a9c2d1e0b8a7f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918071"

func TestLsInspectRm(t *testing.T) {
	s := newSite(t)
	s.create("lan", "--subnet", "198.51.100.0/24", "--ip-range", "198.51.100.128/25", "--aux-address", "printer=198.51.100.130",
		"--ipv6", "--subnet", "2001:db8:100::/64", "-o", "parent=eth0", "--conflict-detection")
	s.create("idle", "--subnet", "203.0.113.0/24", "-o", "parent=eth1")
	// A network of another plugin is not listed.
	if err := os.WriteFile(filepath.Join(s.confDir, "87-podman.conflist"), []byte(`{"cniVersion":"1.0.0","name":"podman","plugins":[{"type":"bridge"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s.lease("lan", "198.51.100.128", ctrA, "eth0", "")
	s.lease("lan", "2001:db8:100::2", ctrA, "eth0", "")
	s.lease("lan", "198.51.100.129", "cnitool-77aa", "net1", "")                    // no cache entry: no name, no MAC
	s.lease("lan", "198.51.100.140", "maclan-conflict", "lan", "02:00:00:00:00:99") // a LAN device found by conflict detection
	s.cacheEntry("lan", ctrA, "eth0", "web", "02:42:c6:33:64:80")
	s.cacheEntry("lan-other", ctrA, "eth0", "wrong", "02:00:00:00:00:01") // another network's

	t.Run("ls", func(t *testing.T) {
		code, out, errOut := s.run("ls", "-o", "json")
		if code != 0 {
			t.Fatalf("exit %d %q", code, errOut)
		}
		var rows []lsRow
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatal(err)
		}
		if len(rows) != 2 || rows[0].Name != "idle" || rows[0].Leases != 0 || rows[1].Name != "lan" || rows[1].Leases != 3 ||
			rows[1].Parent != "eth0" || rows[1].Mode != "bridge" || strings.Join(rows[1].Subnets, ",") != "198.51.100.0/24,2001:db8:100::/64" {
			t.Errorf("got %+v, want idle with 0 leases and lan on eth0 with 3", rows)
		}
		code, out, _ = s.run("ls")
		if code != 0 || !strings.Contains(out, "lan   eth0    bridge  198.51.100.0/24,2001:db8:100::/64  3") {
			t.Errorf("table: exit %d\n%s", code, out)
		}
	})

	t.Run("inspect", func(t *testing.T) {
		code, out, errOut := s.run("inspect", "lan")
		if code != 0 {
			t.Fatalf("exit %d %q", code, errOut)
		}
		var got []inspectOut
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		o := got[0]
		want := map[string]ctrOut{
			ctrA:           {Name: "web", IfName: "eth0", MacAddress: "02:42:c6:33:64:80", IPv4Address: "198.51.100.128/24", IPv6Address: "2001:db8:100::2/64"},
			"cnitool-77aa": {IfName: "net1", IPv4Address: "198.51.100.129/24"},
		}
		if len(o.Containers) != len(want) {
			t.Errorf("got containers %+v, want %+v", o.Containers, want)
		}
		for id, w := range want {
			if o.Containers[id] != w {
				t.Errorf("container %s: got %+v, want %+v", id, o.Containers[id], w)
			}
		}
		if o.LANConflicts["198.51.100.140"] != "02:00:00:00:00:99" {
			t.Errorf("got LANConflicts %v", o.LANConflicts)
		}
		c := o.IPAM.Config
		if len(c) != 2 || c[0].IPRange != "198.51.100.128/25" || c[0].Gateway != "198.51.100.1" || c[0].AuxiliaryAddresses["printer"] != "198.51.100.130" ||
			c[1].Subnet != "2001:db8:100::/64" || c[1].IPRange != "" || !o.EnableIPv6 {
			t.Errorf("got IPAM %+v EnableIPv6 %v", o.IPAM, o.EnableIPv6)
		}
		if o.Options["parent"] != "eth0" || o.Options["macvlan_mode"] != "bridge" || o.Options["conflictDetection"] != "true" {
			t.Errorf("got options %v", o.Options)
		}
		code, out, _ = s.run("inspect", "lan", "-o", "table")
		if code != 0 || !strings.Contains(out, "4f3a9c2d1e0b  web   eth0    02:42:c6:33:64:80  198.51.100.128/24  2001:db8:100::2/64") {
			t.Errorf("table: exit %d\n%s", code, out)
		}
	})

	t.Run("inspect of a missing or foreign network", func(t *testing.T) {
		for name, want := range map[string]string{"nope": "network nope not found in", "podman": "is not a maclan network"} {
			if code, _, errOut := s.run("inspect", name); code != 1 || !strings.Contains(errOut, want) {
				t.Errorf("inspect %s: got exit %d %q, want 1 and %q", name, code, errOut, want)
			}
		}
	})

	t.Run("rm refuses while leases are held", func(t *testing.T) {
		code, _, errOut := s.run("rm", "lan")
		want := "network lan has active endpoints: 4f3a9c2d1e0b (web), cnitool-77aa hold leases; remove them first, or use --force"
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("got exit %d %q, want 1 and %q", code, errOut, want)
		}
		if _, err := os.Stat(filepath.Join(s.confDir, "lan.conflist")); err != nil {
			t.Errorf("the file went: %v", err)
		}
	})

	t.Run("rm once the leases are gone, conflict records aside", func(t *testing.T) {
		for _, ip := range []string{"198.51.100.128", "2001:db8:100::2", "198.51.100.129"} {
			s.release("lan", ip)
		}
		if code, out, errOut := s.run("rm", "lan"); code != 0 || out != "lan\n" {
			t.Fatalf("got exit %d %q %q", code, out, errOut)
		}
		for _, p := range []string{filepath.Join(s.confDir, "lan.conflist"), filepath.Join(s.dataDir, "lan")} {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("%s: %v, want it gone", p, err)
			}
		}
	})

	t.Run("rm --force", func(t *testing.T) {
		s.lease("idle", "203.0.113.7", ctrA, "eth0", "")
		code, _, errOut := s.run("rm", "--force", "idle", "nope")
		if code != 0 || !strings.Contains(errOut, "the leases of 4f3a9c2d1e0b are kept") {
			t.Errorf("got exit %d %q", code, errOut)
		}
		if _, err := os.Stat(filepath.Join(s.dataDir, "idle", "leases", "203.0.113.7")); err != nil {
			t.Errorf("the held lease went with the network: %v", err)
		}
		if code, _, _ := s.run("rm", "nope"); code != 1 {
			t.Errorf("rm of a missing network without --force: exit %d, want 1", code)
		}
	})
}

// TestRangeText: a range is shown as the --ip-range that made it.
func TestRangeText(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--subnet", "10.0.0.0/24"}, ""},
		{[]string{"--subnet", "10.0.0.0/24", "--ip-range", "10.0.0.0/25"}, "10.0.0.0/25"},
		{[]string{"--subnet", "10.0.0.0/24", "--ip-range", "10.0.0.128/25"}, "10.0.0.128/25"},
		{[]string{"--subnet", "10.0.0.0/24", "--ip-range", "10.0.0.64/26"}, "10.0.0.64/26"},
		{[]string{"--subnet", "10.0.0.0/24", "--ip-range", "10.0.0.0/24"}, ""},
		{[]string{"--ipv6", "--subnet", "fd00::/64", "--ip-range", "fd00::/120"}, "fd00::/120"},
	} {
		s := newSite(t)
		s.create("n", tt.args...)
		_, out, _ := s.run("inspect", "n")
		var got []inspectOut
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		if r := got[0].IPAM.Config[0].IPRange; r != tt.want {
			t.Errorf("%v: got IPRange %q, want %q", tt.args, r, tt.want)
		}
	}
}

// TestUsage: the dispatcher's exit statuses.
func TestUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
	}{
		{nil, 2}, {[]string{"frob"}, 2}, {[]string{"--help"}, 0}, {[]string{"ls", "-h"}, 0},
		{[]string{"ls", "extra"}, 2}, {[]string{"inspect"}, 2}, {[]string{"rm"}, 2}, {[]string{"ls", "-o", "yaml"}, 2},
	} {
		if code, _, _ := runMain(t, append(tt.args, "--conf-dir", t.TempDir())...); code != tt.code && len(tt.args) > 0 {
			t.Errorf("%v: exit %d, want %d", tt.args, code, tt.code)
		}
	}
	if code, _, _ := runMain(t); code != 2 {
		t.Errorf("no arguments: exit %d, want 2", code)
	}
}
