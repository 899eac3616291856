//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// Tests of what maclan does beyond the reference plugins on the wire: the
// host shim, conflict detection and MACs derived from the address.

const shimAddr = "198.51.100.250"

// newRogue puts a device on the switch that holds addr (CIDR), as a printer
// or a forgotten static host would, and returns its MAC.
func newRogue(t *testing.T, addr string) string {
	t.Helper()
	_, mac := newRogueNS(t, addr)
	return mac
}

// newRogueNS is newRogue that also returns the device's namespace, whose
// interface on the switch is eth0.
func newRogueNS(t *testing.T, addr string) (*netNS, string) {
	t.Helper()
	n, err := theLab.addNetNS(fmt.Sprintf("rogue%d", theLab.seq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeContainer(t, n) })
	port := fmt.Sprintf("p-rg%d", theLab.seq.Add(1))
	tmp := fmt.Sprintf("%s-r%d", theLab.prefix, theLab.seq.Add(1))
	if len(tmp) > 15 {
		tmp = tmp[len(tmp)-15:]
	}
	err = ipSteps([][]string{
		{"link", "add", tmp, "type", "veth", "peer", "name", port},
		{"link", "set", tmp, "netns", n.name},
		{"link", "set", port, "netns", theLab.sw.name},
		{"-n", n.name, "link", "set", tmp, "name", "eth0"},
		{"-n", theLab.sw.name, "link", "set", port, "master", bridgeName, "up"},
		{"-n", n.name, "link", "set", "eth0", "up"},
		{"-n", n.name, "addr", "add", addr, "dev", "eth0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, n.link(t, "eth0").Attrs().HardwareAddr.String()
}

// lsLeases runs "maclan-ipam ls -o json" on the network's data directory.
func (n *testNet) lsLeases() []map[string]any {
	n.t.Helper()
	out, err := exec.Command(filepath.Join(theLab.binDir, "maclan-ipam"), "ls", "--data-dir", n.dataDir, "-o", "json").Output()
	if err != nil {
		n.t.Fatalf("maclan-ipam ls: %v", err)
	}
	var rows []map[string]any
	if err := json.Unmarshal(out, &rows); err != nil {
		n.t.Fatalf("maclan-ipam ls output %s: %v", out, err)
	}
	return rows
}

func TestConflictDetectionSkipsAddressInUse(t *testing.T) {
	if ipamType != "maclan-ipam" {
		t.Skip("conflict detection is maclan-ipam's")
	}
	// The first address of the range is held by a device the leases do
	// not know about.
	rogueMAC := newRogue(t, rangeStart4+"/24")
	n := newNet(t)
	conf := n.mainConf()
	conf["conflictDetection"] = true
	list := n.list("1.0.0", conf)

	start := time.Now()
	res := n.attach(list, newContainer(t), "eth0").mustAdd()
	t.Logf("ADD with conflict detection (one conflict): %s", time.Since(start))
	v4, _ := resultIPs(t, res)
	if bareIP(v4) == rangeStart4 {
		t.Fatalf("ADD returned %s, which the rogue device holds", v4)
	}

	var found bool
	for _, row := range n.lsLeases() {
		if row["ip"] == rangeStart4 {
			found = true
			if row["conflict"] != rogueMAC {
				t.Errorf("ls shows %s with conflict %v, want the rogue's MAC %s", rangeStart4, row["conflict"], rogueMAC)
			}
		}
	}
	if !found {
		t.Errorf("ls does not show the conflict on %s", rangeStart4)
	}

	// A container asking for that address by name is refused, with the MAC.
	ctr := newContainer(t)
	_, err := n.attach(list, ctr, "eth0").withCaps(map[string]any{"ips": []string{rangeStart4 + "/24"}}).add()
	wantErrorMentions(t, err, rangeStart4, rogueMAC, "in use")
	wantOnlyLoopback(t, ctr)
}

func TestConflictDetectionStaticAddressInUse(t *testing.T) {
	if ipamType != "maclan-ipam" {
		t.Skip("conflict detection is maclan-ipam's")
	}
	addr := "198.51.100.150"
	rogueMAC := newRogue(t, addr+"/24")
	n := newNet(t)
	conf := n.mainConf()
	conf["conflictDetection"] = true
	list := n.list("1.0.0", conf)
	ctr := newContainer(t)
	_, err := n.attach(list, ctr, "eth0").withCaps(map[string]any{"ips": []string{addr + "/24"}}).add()
	wantErrorMentions(t, err, addr, rogueMAC)
	wantOnlyLoopback(t, ctr)
	for _, row := range n.lsLeases() {
		if row["conflict"] == nil {
			t.Errorf("lease left after the failed ADD: %v", row)
		}
	}
}

// shimState is where maclan keeps the host shim's records for the lab's
// host namespace (pkg/shim.StateDir); removed at the end of a shim test.
func shimState() string {
	return filepath.Join("/run/maclan/shim", fmt.Sprintf("netns-%d", theLab.hostID.ino))
}

func TestHostShim(t *testing.T) {
	if pluginType != "maclan" {
		t.Skip("the host shim is maclan's")
	}
	t.Cleanup(func() { _ = os.RemoveAll(shimState()) }) // records are gone by now; the lock file stays
	n := newNet(t)
	conf := n.mainConf()
	conf["hostShim"] = map[string]any{"enabled": true, "address": shimAddr + "/24"}
	list := n.list("1.0.0", conf)

	a1 := n.attach(list, newContainer(t), "eth0")
	v4a, _ := resultIPs(t, a1.mustAdd())
	a2 := n.attach(list, newContainer(t), "eth0")
	v4b, _ := resultIPs(t, a2.mustAdd())

	shim := theLab.host.macvlan(t, "shim-"+masterIf)
	if shim.Mode != netlink.MACVLAN_MODE_BRIDGE {
		t.Errorf("shim mode %d, want bridge", shim.Mode)
	}
	if _, ok := theLab.host.findAddr(t, shim, shimAddr+"/32"); !ok {
		t.Errorf("shim has no address %s/32", shimAddr)
	}
	wantPing(t, theLab.host, bareIP(v4a))
	wantPing(t, theLab.host, bareIP(v4b))
	wantPing(t, a1.ctr, shimAddr)

	// TCP from a container to a listener in the host namespace.
	var ln net.Listener
	if err := theLab.host.ns.Do(func(ns.NetNS) (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(shimAddr, "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		accepted <- string(b)
	}()
	if err := a2.ctr.ns.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("hello host"))
		return err
	}); err != nil {
		t.Fatalf("TCP from the container to the host: %v", err)
	}
	if got := <-accepted; got != "hello host" {
		t.Errorf("host listener got %q, want %q", got, "hello host")
	}

	// Deleted by hand: CHECK says so, the next ADD brings it back with the
	// routes of the containers already there.
	theLab.ip(t, "-n", theLab.host.name, "link", "del", "shim-"+masterIf)
	wantErrorMentions(t, a1.check(), "shim-"+masterIf)
	a3 := n.attach(list, newContainer(t), "eth0")
	a3.mustAdd()
	wantPing(t, theLab.host, bareIP(v4a))
	if err := a1.check(); err != nil {
		t.Errorf("CHECK after the shim came back: %v", err)
	}

	for _, a := range []*attachment{a1, a2, a3} {
		if err := a.del(); err != nil {
			t.Fatalf("DEL: %v", err)
		}
	}
	if names := theLab.host.linkNames(t); strings.Contains(strings.Join(names, " "), "shim-") {
		t.Errorf("host links after the last DEL: %v, want no shim", names)
	}
	routes, err := theLab.host.nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: 0x6d}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 0 {
		t.Errorf("shim routes left after the last DEL: %v", routes)
	}
}

func TestHostShimRefusesPassthru(t *testing.T) {
	if pluginType != "maclan" {
		t.Skip("the host shim is maclan's")
	}
	n := newNet(t)
	conf := n.mainConf()
	conf["mode"] = "passthru"
	conf["master"] = spareIf
	conf["hostShim"] = map[string]any{"enabled": true, "address": shimAddr}
	ctr := newContainer(t)
	_, err := n.attach(n.list("1.0.0", conf), ctr, "eth0").add()
	wantCNIError(t, err, types.ErrInvalidNetworkConfig, "hostShim", "passthru")
	wantOnlyLoopback(t, ctr)
}

func TestMACFromIP(t *testing.T) {
	if pluginType != "maclan" {
		t.Skip("macFromIP is maclan's")
	}
	n := newNet(t)
	conf := n.mainConf()
	conf["macFromIP"] = true
	list := n.list("1.0.0", conf)
	fixed := "198.51.100.177"
	want := "02:6d:c6:33:64:b1" // 02:6d and the four bytes of 198.51.100.177

	ctr := newContainer(t)
	a := n.attach(list, ctr, "eth0").withCaps(map[string]any{"ips": []string{fixed + "/24"}})
	res := a.mustAdd()
	if got := res.Interfaces[0].Mac; got != want {
		t.Errorf("MAC for %s = %s, want %s", fixed, got, want)
	}
	if got := ctr.link(t, "eth0").Attrs().HardwareAddr.String(); got != want {
		t.Errorf("kernel MAC = %s, want %s", got, want)
	}
	waitGwNeighbour(t, fixed, want)

	// Re-created with the same address: the same MAC.
	if err := a.del(); err != nil {
		t.Fatal(err)
	}
	ctr2 := newContainer(t)
	res = n.attach(list, ctr2, "eth0").withCaps(map[string]any{"ips": []string{fixed + "/24"}}).mustAdd()
	if got := res.Interfaces[0].Mac; got != want {
		t.Errorf("MAC after re-creation = %s, want %s", got, want)
	}

	// Another address: another MAC. An explicit MAC still wins.
	res = n.attach(list, newContainer(t), "eth0").mustAdd()
	if got := res.Interfaces[0].Mac; got == want || !strings.HasPrefix(got, "02:6d:") {
		t.Errorf("MAC for another address = %s, want another 02:6d: MAC", got)
	}
	explicit := macFor(7)
	res = n.attach(list, newContainer(t), "eth0").withCaps(map[string]any{"mac": explicit}).mustAdd()
	if got := res.Interfaces[0].Mac; got != explicit {
		t.Errorf("MAC with runtimeConfig.mac = %s, want %s", got, explicit)
	}
}
