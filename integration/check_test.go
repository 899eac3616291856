//go:build integration

package integration

import (
	"testing"

	"github.com/vishvananda/netlink"
)

// CHECK passes on a fresh attachment and catches drift in the container.

func TestCheckCatchesDrift(t *testing.T) {
	for _, tc := range []struct {
		name    string
		drift   func(t *testing.T, c *netNS, v4, v6 string)
		mention func(v4, v6 string) string // what the error must name
	}{
		{
			name: "link removed",
			drift: func(t *testing.T, c *netNS, _, _ string) {
				if err := c.nl.LinkDel(c.link(t, "net1")); err != nil {
					t.Fatal(err)
				}
			},
			mention: func(_, _ string) string { return "net1" },
		},
		{
			name: "IPv4 address removed",
			drift: func(t *testing.T, c *netNS, v4, _ string) {
				delAddr(t, c, v4)
			},
			mention: func(v4, _ string) string { return bareIP(v4) },
		},
		{
			name: "IPv6 address removed",
			drift: func(t *testing.T, c *netNS, _, v6 string) {
				delAddr(t, c, v6)
			},
			mention: func(_, v6 string) string { return bareIP(v6) },
		},
		{
			name: "default route removed",
			drift: func(t *testing.T, c *netNS, _, _ string) {
				l := c.link(t, "net1")
				routes, err := c.nl.RouteList(l, netlink.FAMILY_V4)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range routes {
					if r.Dst == nil || r.Dst.IP.IsUnspecified() {
						if err := c.nl.RouteDel(&r); err != nil {
							t.Fatal(err)
						}
					}
				}
			},
			mention: func(_, _ string) string { return "0.0.0.0" }, // the route's destination
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
			v4, v6 := resultIPs(t, res)
			tc.drift(t, c, v4, v6)
			err := a.check()
			if err == nil {
				t.Fatal("CHECK passed after the drift, want an error")
			}
			t.Logf("CHECK: %v", err)
			wantErrorMentions(t, err, tc.mention(v4, v6))
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
