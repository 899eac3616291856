//go:build integration

package integration

import (
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/maclan-cni/maclan/pkg/shim"
)

// The cnitool examples of conflist-examples/, each driven through the
// cnitool binary as its README line tells a user to: ADD, a look at the
// container, CHECK, DEL twice, nothing left.

// TestCnitoolDualStack: 10-maclan.conflist gives a container an IPv4 and an
// IPv6 address from its ranges, and default routes to both gateways.
func TestCnitoolDualStack(t *testing.T) {
	n, list, c := cnitoolExample(t, "10-maclan.conflist")
	res := cnitoolAdd(t, n, list, c)
	v4, v6 := resultIPs(t, res)
	wantInRange(t, v4, rangeStart4, "198.51.100.199")
	wantInRange(t, v6, rangeStart6, rangeEnd6)
	l := c.macvlan(t, "eth0")
	for _, cidr := range []string{v4, v6} {
		if _, ok := c.findAddr(t, l, cidr); !ok {
			t.Errorf("container eth0 lacks %s", cidr)
		}
	}
	c.wantDefaultRoute(t, l, netlink.FAMILY_V4, gw4)
	c.wantDefaultRoute(t, l, netlink.FAMILY_V6, gw6)
	wantPing(t, c, gw4)
	wantPing(t, c, gw6)
	cnitoolCheckDel(t, n, list, c)
}

// TestCnitoolStaticIP: 20-maclan-static.conflist takes a fixed address
// through CAP_ARGS (capability "ips"), which is released on DEL.
func TestCnitoolStaticIP(t *testing.T) {
	const static = "198.51.100.150/24"
	n, list, c := cnitoolExample(t, "20-maclan-static.conflist", `CAP_ARGS={"ips":["`+static+`"]}`)
	res := cnitoolAdd(t, n, list, c)
	if v4, _ := resultIPs(t, res); v4 != static {
		t.Errorf("ADD result IPv4 %q, want %s", v4, static)
	}
	if _, ok := c.findAddr(t, c.macvlan(t, "eth0"), static); !ok {
		t.Errorf("container eth0 lacks %s", static)
	}
	if got := n.heldLeases(); len(got) != 1 || got[0] != bareIP(static) {
		t.Errorf("IPAM holds %v, want [%s]", got, bareIP(static))
	}
	wantPing(t, theLab.gw, bareIP(static))
	cnitoolCheckDel(t, n, list, c)
}

// TestCnitoolHostShim: with 30-maclan-host-shim.conflist the lab host (the
// macvlan master's namespace) reaches its container, which a macvlan parent
// cannot do alone; the shim goes with the last container.
func TestCnitoolHostShim(t *testing.T) {
	n, list, c := cnitoolExample(t, "30-maclan-host-shim.conflist")
	t.Cleanup(func() { _ = os.RemoveAll(shimState()) }) // the shim's lock file outlives it
	res := cnitoolAdd(t, n, list, c)
	v4, _ := resultIPs(t, res)
	theLab.host.link(t, shim.Name(masterIf))
	wantPing(t, theLab.host, bareIP(v4))
	wantPing(t, c, gw4)
	cnitoolCheckDel(t, n, list, c)
	if names := theLab.host.linkNames(t); strings.Contains(strings.Join(names, " "), shim.Name(masterIf)) {
		t.Errorf("host shim %s still in the lab host after the last DEL: %v", shim.Name(masterIf), names)
	}
	wantNoPing(t, theLab.host, bareIP(v4))
}

// TestCnitoolConflictDetection: with 40-maclan-conflict-detection.conflist,
// an address of the range that a device on the LAN already answers for (a
// printer with a static address, say) is not handed out; `maclan-ipam ls`
// names the device.
func TestCnitoolConflictDetection(t *testing.T) {
	if ipamType != "maclan-ipam" {
		t.Skip("conflict detection is maclan-ipam's")
	}
	rogueMAC := newRogue(t, rangeStart4+"/24")
	n, list, c := cnitoolExample(t, "40-maclan-conflict-detection.conflist")
	res := cnitoolAdd(t, n, list, c)
	v4, _ := resultIPs(t, res)
	if bareIP(v4) == rangeStart4 {
		t.Fatalf("ADD handed out %s, which the device %s holds", v4, rogueMAC)
	}
	wantPing(t, theLab.gw, bareIP(v4))
	wantConflictOnly := func(when string) {
		t.Helper()
		var others []map[string]any
		conflict := false
		for _, row := range n.lsLeases() {
			switch {
			case row["ip"] == rangeStart4 && row["conflict"] == rogueMAC:
				conflict = true
			case when == "after DEL" || row["ip"] != bareIP(v4):
				others = append(others, row)
			}
		}
		if !conflict || len(others) != 0 {
			t.Errorf("maclan-ipam ls %s: conflict on %s recorded: %v; other rows %v, want none", when, rangeStart4, conflict, others)
		}
	}
	wantConflictOnly("after ADD")
	if _, err := n.cnitool(list, "check", c, n.env...); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	for i := 1; i <= 2; i++ {
		if _, err := n.cnitool(list, "del", c, n.env...); err != nil {
			t.Errorf("DEL #%d: %v", i, err)
		}
	}
	wantOnlyLoopback(t, c)
	wantConflictOnly("after DEL") // the conflict record stays: the device is still there
}

// TestCnitoolStableMAC: with 50-maclan-stable-mac.conflist (macFromIP) a
// container's eth0 MAC is 02:6d and the four bytes of its IPv4 address; a
// container re-created on the network with the same static address (a new
// namespace, a new container ID) gets the same MAC, so the gateway's
// neighbour entry for the address stays right.
func TestCnitoolStableMAC(t *testing.T) {
	if pluginType != "maclan" {
		t.Skip("macFromIP is maclan's")
	}
	const static = "198.51.100.160/24"
	const want = "02:6d:c6:33:64:a0" // 198 51 100 160, as conflist-examples/README.md says
	if got := macOfIPv4(t, static); got != want {
		t.Fatalf("derivation of %s gives %s, want %s", static, got, want)
	}
	n, list, c1 := cnitoolExample(t, "50-maclan-stable-mac.conflist", `CAP_ARGS={"ips":["`+static+`"]}`)
	addStatic := func(what string, c *netNS) {
		t.Helper()
		res := cnitoolAdd(t, n, list, c)
		if v4, _ := resultIPs(t, res); v4 != static {
			t.Errorf("%s: ADD result IPv4 %q, want %s", what, v4, static)
		}
		l := c.macvlan(t, "eth0")
		if got := l.Attrs().HardwareAddr.String(); got != want {
			t.Errorf("%s: eth0 MAC %s, want %s", what, got, want)
		}
		wantMACFromIP(t, res, l.Attrs().HardwareAddr.String())
		if _, ok := c.findAddr(t, l, static); !ok {
			t.Errorf("%s: container eth0 lacks %s", what, static)
		}
		wantPing(t, theLab.gw, bareIP(static))
		waitGwNeighbour(t, bareIP(static), want)
	}

	addStatic("first container", c1)
	cnitoolCheckDel(t, n, list, c1)
	removeContainer(t, c1)

	c2 := newContainer(t)
	t.Cleanup(func() {
		if _, err := n.cnitool(list, "del", c2, n.env...); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	addStatic("re-created container", c2)
	cnitoolCheckDel(t, n, list, c2)
}

// cnitoolExample loads an example for cnitool and makes a container; env
// (CAP_ARGS, ...) goes with every cnitool call of the test. A DEL is
// registered for the end of the test.
func cnitoolExample(t *testing.T, file string, env ...string) (*cnitoolNet, *libcni.NetworkConfigList, *netNS) {
	t.Helper()
	n := &cnitoolNet{testNet: newNet(t), env: env}
	list := n.exampleList("../conflist-examples/" + file)
	c := newContainer(t)
	t.Cleanup(func() {
		if _, err := n.cnitool(list, "del", c, n.env...); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	return n, list, c
}

// cnitoolNet is a test network driven by cnitool with a fixed environment.
type cnitoolNet struct {
	*testNet
	env []string
}

func cnitoolAdd(t *testing.T, n *cnitoolNet, list *libcni.NetworkConfigList, c *netNS) *current.Result {
	t.Helper()
	out, err := n.cnitool(list, "add", c, n.env...)
	if err != nil {
		t.Fatal(err)
	}
	var res current.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("cnitool add printed %q: %v", out, err)
	}
	return &res
}

func cnitoolCheckDel(t *testing.T, n *cnitoolNet, list *libcni.NetworkConfigList, c *netNS) {
	t.Helper()
	if _, err := n.cnitool(list, "check", c, n.env...); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	for i := 1; i <= 2; i++ {
		if _, err := n.cnitool(list, "del", c, n.env...); err != nil {
			t.Errorf("DEL #%d: %v", i, err)
		}
	}
	wantOnlyLoopback(t, c)
	n.wantNoLeases()
}

// wantInRange checks that the address of cidr lies in [first, last].
func wantInRange(t *testing.T, cidr, first, last string) {
	t.Helper()
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		t.Errorf("address %q: %v", cidr, err)
		return
	}
	a := p.Addr()
	if a.Less(netip.MustParseAddr(first)) || netip.MustParseAddr(last).Less(a) {
		t.Errorf("address %s outside the range %s-%s", a, first, last)
	}
}
