//go:build integration

package integration

import (
	"slices"
	"testing"
)

// A repeated ADD (a runtime retrying after a time-out, "cnitool add" run
// twice) is answered with the first ADD's result; it never gives back the
// lease that the running container holds.

func TestRepeatedAddSameResult(t *testing.T) {
	n := newNet(t)
	c := newContainer(t)
	a := n.attach(n.list("1.0.0", n.mainConf()), c, "eth0")
	first := a.mustAdd()
	second := a.mustAdd()
	if got, want := resultAddrs(second), resultAddrs(first); !slices.Equal(got, want) {
		t.Errorf("repeated ADD gave %v, first ADD gave %v", got, want)
	}
	if got, want := second.Interfaces[0].Mac, first.Interfaces[0].Mac; got != want {
		t.Errorf("repeated ADD gave MAC %s, first ADD gave %s", got, want)
	}
	if names := sortedLinks(t, c); !slices.Equal(names, []string{"eth0", "lo"}) {
		t.Errorf("links in the container after two ADDs: %v, want [eth0 lo]", names)
	}
	held := n.heldLeases()
	if len(held) != 2 {
		t.Fatalf("IPAM holds %v after two ADDs of one attachment, want its two addresses", held)
	}
	// The addresses stay taken: the next container gets others.
	other := n.attach(n.list("1.0.0", n.mainConf()), newContainer(t), "eth0").mustAdd()
	for _, addr := range resultAddrs(other) {
		if slices.Contains(resultAddrs(first), addr) {
			t.Errorf("address %s handed out twice", addr)
		}
	}
	if err := a.del(); err != nil {
		t.Fatal(err)
	}
	wantOnlyLoopback(t, c)
}

// cnitool add run twice on one namespace: the user's way to hit it.
func TestRepeatedAddCnitool(t *testing.T) {
	n := newNet(t)
	c := newContainer(t)
	list := n.list("1.0.0", n.mainConf())
	t.Cleanup(func() { _, _ = n.cnitool(list, "del", c) })
	first, err := n.cnitool(list, "add", c)
	if err != nil {
		t.Fatal(err)
	}
	second, err := n.cnitool(list, "add", c)
	if err != nil {
		t.Fatalf("second cnitool add: %v", err)
	}
	if first != second {
		t.Errorf("second cnitool add printed\n%s\nfirst printed\n%s", second, first)
	}
	if held := n.heldLeases(); len(held) != 2 {
		t.Errorf("IPAM holds %v after two cnitool adds, want two addresses", held)
	}
}

// An interface of the name that is not this network's (another plugin's
// veth, a macvlan in another mode) fails the ADD with a message naming what
// was found, and leaves the container and the first lease as they were.
func TestRepeatedAddForeignInterface(t *testing.T) {
	t.Run("veth", func(t *testing.T) {
		n := newNet(t)
		c := newContainer(t)
		theLab.ip(t, "-n", c.name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
		_, err := n.attach(n.list("1.0.0", n.mainConf()), c, "eth0").add()
		wantErrorMentions(t, err, `"eth0"`, "veth", "left as it was")
		if names := sortedLinks(t, c); !slices.Equal(names, []string{"eth0", "lo", "peer0"}) {
			t.Errorf("links in the container: %v, want the veth pair untouched", names)
		}
		n.wantNoLeases()
	})
	t.Run("other mode", func(t *testing.T) {
		n := newNet(t)
		c := newContainer(t)
		first := n.attach(n.list("1.0.0", n.mainConf()), c, "eth0").mustAdd()
		conf := n.mainConf()
		conf["mode"] = "private"
		_, err := n.attach(n.list("1.0.0", conf), c, "eth0").add()
		wantErrorMentions(t, err, "mode bridge, want private", "left as it was")
		held := n.heldLeases()
		for _, addr := range resultAddrs(first) {
			if ip := addr.String(); !slices.Contains(held, ip) {
				t.Errorf("the failed repeat released %s, which the container still holds (held: %v)", ip, held)
			}
		}
	})
}

func sortedLinks(t *testing.T, c *netNS) []string {
	t.Helper()
	names := c.linkNames(t)
	slices.Sort(names)
	return names
}
