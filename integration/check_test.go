//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
)

// CHECK passes on a fresh attachment and catches drift in the container,
// and in the IPAM it delegates to.

// drifted is an attachment after ADD, for a drift to act on.
type drifted struct {
	n      *testNet
	c      *netNS
	v4, v6 string // the result's addresses
}

const driftMAC = "02:6d:6c:00:00:99"

func TestCheckCatchesDrift(t *testing.T) {
	for _, tc := range []struct {
		name    string
		drift   func(t *testing.T, d drifted)
		mention func(d drifted) string // what the error must name; "" for anything
	}{
		{
			name: "link removed",
			drift: func(t *testing.T, d drifted) {
				if err := d.c.nl.LinkDel(d.c.link(t, "net1")); err != nil {
					t.Fatal(err)
				}
			},
			mention: func(drifted) string { return "net1" },
		},
		{
			name:    "IPv4 address removed",
			drift:   func(t *testing.T, d drifted) { delAddr(t, d.c, d.v4) },
			mention: func(d drifted) string { return bareIP(d.v4) },
		},
		{
			name:    "IPv6 address removed",
			drift:   func(t *testing.T, d drifted) { delAddr(t, d.c, d.v6) },
			mention: func(d drifted) string { return bareIP(d.v6) },
		},
		{
			name: "default route removed",
			drift: func(t *testing.T, d drifted) {
				l := d.c.link(t, "net1")
				routes, err := d.c.nl.RouteList(l, netlink.FAMILY_V4)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range routes {
					if r.Dst == nil || r.Dst.IP.IsUnspecified() {
						if err := d.c.nl.RouteDel(&r); err != nil {
							t.Fatal(err)
						}
					}
				}
			},
			mention: func(drifted) string { return "0.0.0.0" }, // the route's destination
		},
		{
			name: "MAC changed",
			drift: func(t *testing.T, d drifted) {
				theLab.ip(t, "-n", d.c.name, "link", "set", "net1", "address", driftMAC)
			},
			mention: func(drifted) string { return driftMAC },
		},
		{
			name: "mode changed",
			drift: func(t *testing.T, d drifted) {
				theLab.ip(t, "-n", d.c.name, "link", "set", "net1", "type", "macvlan", "mode", "private")
			},
			mention: func(drifted) string { return "private" },
		},
		{
			name: "IPAM lease lost",
			drift: func(t *testing.T, d drifted) {
				if err := os.RemoveAll(filepath.Join(d.n.dataDir, d.n.name)); err != nil {
					t.Fatal(err)
				}
			},
			mention: func(drifted) string { return "" }, // in the IPAM's words
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNet(t)
			c := newContainer(t)
			a := n.attach(n.list("1.0.0", n.mainConf()), c, "net1")
			res := a.mustAdd()
			if err := a.check(); err != nil {
				t.Fatalf("CHECK right after ADD: %v", err)
			}
			d := drifted{n: n, c: c}
			d.v4, d.v6 = resultIPs(t, res)
			tc.drift(t, d)
			err := a.check()
			if err == nil {
				t.Fatal("CHECK passed after the drift, want an error")
			}
			t.Logf("CHECK: %v", err)
			wantErrorMentions(t, err, tc.mention(d))
			// DEL still cleans up after drift.
			if err := a.del(); err != nil {
				t.Errorf("DEL after drift: %v", err)
			}
			wantOnlyLoopback(t, c)
			n.wantNoLeases()
		})
	}
}

func delAddr(t *testing.T, c *netNS, cidr string) {
	t.Helper()
	l := c.link(t, "net1")
	a, ok := c.findAddr(t, l, cidr)
	if !ok {
		t.Fatalf("net1 has no %s to remove", cidr)
	}
	if err := c.nl.AddrDel(l, &a); err != nil {
		t.Fatal(err)
	}
}

// TestCheckWrongMaster: CHECK with a configuration whose master is not the
// macvlan's parent fails.
func TestCheckWrongMaster(t *testing.T) {
	n := newNet(t)
	c := newContainer(t)
	n.attach(n.list("1.0.0", n.mainConf()), c, "net1").mustAdd()
	conf := n.mainConf()
	conf["master"] = spareIf
	err := n.attach(n.list("1.0.0", conf), c, "net1").check()
	if err == nil {
		t.Fatalf("CHECK with master %s passed for a macvlan on %s, want an error", spareIf, masterIf)
	}
	t.Logf("CHECK: %v", err)
	wantErrorMentions(t, err, spareIf)
}
