//go:build integration

package integration

import (
	"testing"

	"github.com/vishvananda/netlink"
)

// Each macvlan mode's semantics, shown with real traffic between two
// sibling containers on the same master and the gateway across the switch.

// addSiblings attaches two containers to a network in mode and returns
// them with their IPv4 addresses.
func addSiblings(t *testing.T, mode string) (c1, c2 *netNS, ip1, ip2 string) {
	t.Helper()
	n := newNet(t)
	conf := n.mainConf()
	conf["mode"] = mode
	list := n.list("1.0.0", conf)
	c1, c2 = newContainer(t), newContainer(t)
	r1 := n.attach(list, c1, "eth0").mustAdd()
	r2 := n.attach(list, c2, "eth0").mustAdd()
	ip1, _ = resultIPs(t, r1)
	ip2, _ = resultIPs(t, r2)
	for _, c := range []*netNS{c1, c2} {
		mv := c.macvlan(t, "eth0")
		if mv.Mode != wantMode(t, mode) {
			t.Errorf("%s: macvlan mode %d, want %s", c.name, mv.Mode, mode)
		}
		if want := theLab.host.link(t, masterIf).Attrs().Index; mv.ParentIndex != want {
			t.Errorf("%s: macvlan parent index %d, want %d (%s in the host ns)", c.name, mv.ParentIndex, want, masterIf)
		}
	}
	return c1, c2, bareIP(ip1), bareIP(ip2)
}

func wantMode(t *testing.T, mode string) netlink.MacvlanMode {
	t.Helper()
	m := map[string]netlink.MacvlanMode{
		"bridge":   netlink.MACVLAN_MODE_BRIDGE,
		"private":  netlink.MACVLAN_MODE_PRIVATE,
		"vepa":     netlink.MACVLAN_MODE_VEPA,
		"passthru": netlink.MACVLAN_MODE_PASSTHRU,
	}[mode]
	if m == 0 {
		t.Fatalf("unknown mode %q", mode)
	}
	return m
}

// hairpin turns hairpin on for the switch port of the host's master for
// the rest of the test.
func hairpin(t *testing.T) {
	t.Helper()
	sw := theLab.sw.name
	if err := run("ip", "netns", "exec", sw, "bridge", "link", "set", "dev", hostPort, "hairpin", "on"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := run("ip", "netns", "exec", sw, "bridge", "link", "set", "dev", hostPort, "hairpin", "off"); err != nil {
			t.Errorf("turn hairpin off: %v", err)
		}
	})
}

func TestModeBridge(t *testing.T) {
	c1, c2, ip1, ip2 := addSiblings(t, "bridge")
	wantPing(t, c1, gw4)
	wantPing(t, c2, gw4)
	wantPing(t, c1, ip2)
	wantPing(t, c2, ip1)
}

func TestModePrivate(t *testing.T) {
	c1, c2, ip1, ip2 := addSiblings(t, "private")
	wantPing(t, c1, gw4)
	wantPing(t, c2, gw4)
	wantNoPing(t, c1, ip2)
	wantNoPing(t, c2, ip1)

	// Private drops frames from a sibling even when the switch reflects them.
	hairpin(t)
	wantNoPing(t, c1, ip2)
}

func TestModeVEPA(t *testing.T) {
	c1, c2, ip1, ip2 := addSiblings(t, "vepa")
	wantPing(t, c1, gw4)
	wantPing(t, c2, gw4)
	// Frames between siblings go out to the switch, which does not send a
	// frame back out of the port it came in on...
	wantNoPing(t, c1, ip2)
	// ...unless that port hairpins.
	hairpin(t)
	wantPing(t, c1, ip2)
	wantPing(t, c2, ip1)
}

// TestModePassthru uses the spare master: passthru takes the whole device,
// so one container per master, and a second ADD fails clearly without
// leaving anything behind.
func TestModePassthru(t *testing.T) {
	n := newNet(t)
	conf := n.mainConf()
	conf["mode"] = "passthru"
	conf["master"] = spareIf
	list := n.list("1.0.0", conf)

	c1 := newContainer(t)
	r1 := n.attach(list, c1, "eth0").mustAdd()
	mv := c1.macvlan(t, "eth0")
	if mv.Mode != netlink.MACVLAN_MODE_PASSTHRU {
		t.Errorf("macvlan mode %d, want passthru", mv.Mode)
	}
	if want := theLab.host.link(t, spareIf).Attrs().Index; mv.ParentIndex != want {
		t.Errorf("macvlan parent index %d, want %d (%s)", mv.ParentIndex, want, spareIf)
	}
	wantPing(t, c1, gw4)
	ip1, _ := resultIPs(t, r1)

	c2 := newContainer(t)
	_, err := n.attach(list, c2, "eth0").add()
	if err == nil {
		t.Fatalf("second passthru ADD on %s succeeded, want an error", spareIf)
	}
	t.Logf("second passthru ADD: %v", err)
	wantErrorMentions(t, err, spareIf)
	wantOnlyLoopback(t, c2)
	if got := n.heldLeases(); len(got) != 2 { // IPv4 and IPv6 of c1 only
		t.Errorf("IPAM holds %v after the failed ADD, want only c1's two addresses (%s, ...)", got, ip1)
	}
	// The first container is undisturbed.
	wantPing(t, c1, gw4)
}

// TestDefaultMaster leaves out "master": the plugin takes the interface of
// the host's default route (eth0), not the first interface (eth1).
func TestDefaultMaster(t *testing.T) {
	n := newNet(t)
	conf := n.mainConf()
	delete(conf, "master")
	c := newContainer(t)
	n.attach(n.list("1.0.0", conf), c, "eth0").mustAdd()
	mv := c.macvlan(t, "eth0")
	if want := theLab.host.link(t, masterIf).Attrs().Index; mv.ParentIndex != want {
		t.Errorf("macvlan parent index %d, want %d (%s, the default-route interface)", mv.ParentIndex, want, masterIf)
	}
	wantPing(t, c, gw4)
}

func TestBCQueueLen(t *testing.T) {
	n := newNet(t)
	conf := n.mainConf()
	conf["bcqueuelen"] = 123
	c := newContainer(t)
	n.attach(n.list("1.0.0", conf), c, "eth0").mustAdd()
	if got := c.macvlan(t, "eth0").BCQueueLen; got != 123 {
		t.Errorf("broadcast queue length %d, want 123", got)
	}
}

// TestLinkInContainer: with linkInContainer the master lives in the
// container namespace (here a veth whose other end is on the switch) and
// the macvlan is made there.
func TestLinkInContainer(t *testing.T) {
	const master, port = "uplink0", "p-ctr"
	c := newContainer(t)
	sw := theLab.sw.name
	theLab.ip(t, "-n", sw, "link", "add", port, "type", "veth", "peer", "name", master, "netns", c.name)
	t.Cleanup(func() {
		if _, err := theLab.sw.nl.LinkByName(port); err == nil {
			_ = run("ip", "-n", sw, "link", "del", port) // best effort; the lab teardown removes it anyway
		}
	})
	theLab.ip(t, "-n", sw, "link", "set", port, "master", bridgeName, "up")
	theLab.ip(t, "-n", c.name, "link", "set", master, "up")

	n := newNet(t)
	conf := n.mainConf()
	conf["master"] = master
	conf["linkInContainer"] = true
	a := n.attach(n.list("1.0.0", conf), c, "eth0")
	a.mustAdd()
	mv := c.macvlan(t, "eth0")
	if want := c.link(t, master).Attrs().Index; mv.ParentIndex != want {
		t.Errorf("macvlan parent index %d, want %d (%s in the container)", mv.ParentIndex, want, master)
	}
	wantPing(t, c, gw4)
	if err := a.check(); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := a.del(); err != nil {
		t.Errorf("DEL: %v", err)
	}
	if _, err := c.nl.LinkByName("eth0"); err == nil {
		t.Errorf("eth0 still in the container after DEL")
	}
	n.wantNoLeases()
}
