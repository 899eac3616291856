//go:build integration

package integration

import (
	"os"
	"testing"
)

// DEL is idempotent: it succeeds, and releases the lease, whatever is left
// of the attachment.

// addForDel attaches one container and checks that the IPAM holds its two
// addresses.
func addForDel(t *testing.T, n *testNet, conf map[string]any) (*attachment, *netNS) {
	t.Helper()
	c := newContainer(t)
	a := n.attach(n.list("1.0.0", conf), c, "eth0")
	a.mustAdd()
	if got := n.heldLeases(); len(got) != 2 {
		t.Fatalf("IPAM holds %v after ADD, want two addresses", got)
	}
	return a, c
}

func TestDelTwice(t *testing.T) {
	n := newNet(t)
	a, c := addForDel(t, n, n.mainConf())
	for i := 1; i <= 2; i++ {
		if err := a.del(); err != nil {
			t.Errorf("DEL #%d: %v", i, err)
		}
	}
	wantOnlyLoopback(t, c)
	n.wantNoLeases()
}

func TestDelNetnsGone(t *testing.T) {
	n := newNet(t)
	a, c := addForDel(t, n, n.mainConf())
	removeContainer(t, c)
	if _, err := os.Stat(c.path); !os.IsNotExist(err) {
		t.Fatalf("netns %s still there: %v", c.path, err)
	}
	if err := a.del(); err != nil {
		t.Errorf("DEL with the netns gone: %v", err)
	}
	n.wantNoLeases()
}

func TestDelWithoutAdd(t *testing.T) {
	n := newNet(t)
	c := newContainer(t)
	a := n.attach(n.list("1.0.0", n.mainConf()), c, "eth0")
	if err := a.del(); err != nil {
		t.Errorf("DEL without ADD: %v", err)
	}
	wantOnlyLoopback(t, c)
}

// TestDelMasterGone uses a master of its own, removed after ADD (which also
// removes the macvlan in the container).
func TestDelMasterGone(t *testing.T) {
	const master, port = "eth7", "p-tmp"
	sw, host := theLab.sw.name, theLab.host.name
	theLab.ip(t, "-n", sw, "link", "add", port, "type", "veth", "peer", "name", master, "netns", host)
	t.Cleanup(func() {
		if _, err := theLab.sw.nl.LinkByName(port); err == nil {
			_ = run("ip", "-n", sw, "link", "del", port) // best effort; the lab teardown removes it anyway
		}
	})
	theLab.ip(t, "-n", sw, "link", "set", port, "master", bridgeName, "up")
	theLab.ip(t, "-n", host, "link", "set", master, "up")

	n := newNet(t)
	conf := n.mainConf()
	conf["master"] = master
	a, c := addForDel(t, n, conf)
	theLab.ip(t, "-n", host, "link", "del", master)
	wantOnlyLoopback(t, c)
	if err := a.del(); err != nil {
		t.Errorf("DEL with the master gone: %v", err)
	}
	n.wantNoLeases()
}
