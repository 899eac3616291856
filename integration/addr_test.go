//go:build integration

package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
)

// Addresses, routes, MTU and MAC of the container interface, and what the
// gateway learns about them.

func TestDualStack(t *testing.T) {
	n := newNet(t)
	c := newContainer(t)
	res := n.attach(n.list("1.1.0", n.mainConf()), c, "net1").mustAdd()

	l := c.macvlan(t, "net1")
	if l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("net1 is down, want up")
	}
	wantResultInterface(t, res, c, "net1", l.Attrs().HardwareAddr.String())
	v4, v6 := resultIPs(t, res)
	if v4 == "" || v6 == "" {
		t.Fatalf("result IPs %v, want one IPv4 and one IPv6", res.IPs)
	}
	for _, ipc := range res.IPs {
		if ipc.Interface == nil || *ipc.Interface < 0 || *ipc.Interface >= len(res.Interfaces) ||
			res.Interfaces[*ipc.Interface].Name != "net1" {
			t.Errorf("result IP %s does not point at interface net1", ipc.Address.String())
		}
	}
	for _, cidr := range []string{v4, v6} {
		if _, ok := c.findAddr(t, l, cidr); !ok {
			t.Errorf("net1 lacks %s from the result", cidr)
		}
	}
	// "IPv6 waits for DAD": the address is usable when ADD returns.
	c.wantSettled(t, l)
	c.wantDefaultRoute(t, l, netlink.FAMILY_V4, gw4)
	c.wantDefaultRoute(t, l, netlink.FAMILY_V6, gw6)

	c.waitSettled(t, l)
	wantPing(t, c, gw4)
	wantPing(t, c, gw6)
	wantPing(t, theLab.gw, bareIP(v4))
	wantPing(t, theLab.gw, bareIP(v6))
}

// wantResultInterface checks the result's entry for the container interface.
func wantResultInterface(t *testing.T, res *current.Result, c *netNS, ifName, mac string) {
	t.Helper()
	for _, i := range res.Interfaces {
		if i.Name != ifName {
			continue
		}
		if i.Sandbox != c.path {
			t.Errorf("result interface %s sandbox %q, want %q", ifName, i.Sandbox, c.path)
		}
		if i.Mac != mac {
			t.Errorf("result interface %s mac %q, want %q (the link's)", ifName, i.Mac, mac)
		}
		return
	}
	t.Errorf("result has no interface %s: %+v", ifName, res.Interfaces)
}

// TestL2Only: an empty ipam gives an interface that is up with no address.
func TestL2Only(t *testing.T) {
	n := newNet(t)
	conf := n.mainConf()
	delete(conf, "ipam")
	c := newContainer(t)
	res := n.attach(n.list("1.0.0", conf), c, "eth0").mustAdd()
	l := c.macvlan(t, "eth0")
	if l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("eth0 is down, want up")
	}
	if len(res.IPs) != 0 {
		t.Errorf("result IPs %v, want none", res.IPs)
	}
	if got := c.addrs(t, l, netlink.FAMILY_V4); len(got) != 0 {
		t.Errorf("eth0 has IPv4 addresses %v, want none", got)
	}
}

func TestMTU(t *testing.T) {
	for _, tc := range []struct {
		name string
		mtu  int // 0: not set
		want int
	}{
		{"default is the master's", 0, masterMTU},
		{"smaller", 1400, 1400},
		{"equal to the master's", masterMTU, masterMTU},
		{"IPv6 minimum", 1280, 1280},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNet(t)
			conf := n.mainConf()
			if tc.mtu != 0 {
				conf["mtu"] = tc.mtu
			}
			c := newContainer(t)
			n.attach(n.list("1.0.0", conf), c, "eth0").mustAdd()
			if got := c.link(t, "eth0").Attrs().MTU; got != tc.want {
				t.Errorf("got MTU %d, want %d", got, tc.want)
			}
			wantPing(t, c, gw4)
		})
	}
}

// TestMACSources drives cnitool as a user would: the MAC comes from
// runtimeConfig.mac (CAP_ARGS) over CNI_ARGS MAC= over the config's "mac".
// The network is L2 only, so that the MAC arguments meet no IPAM.
func TestMACSources(t *testing.T) {
	confMAC, argsMAC, capMAC := macFor(1), macFor(2), macFor(3)
	for _, tc := range []struct {
		name    string
		confMAC string
		env     []string
		want    string
	}{
		{"config", confMAC, nil, confMAC},
		{"CNI_ARGS over config", confMAC, []string{"CNI_ARGS=MAC=" + argsMAC}, argsMAC},
		{"runtimeConfig over CNI_ARGS", confMAC, []string{
			"CNI_ARGS=MAC=" + argsMAC,
			fmt.Sprintf(`CAP_ARGS={"mac":%q}`, capMAC),
		}, capMAC},
		{"runtimeConfig alone", "", []string{fmt.Sprintf(`CAP_ARGS={"mac":%q}`, capMAC)}, capMAC},
		// Keys meant for the IPAM or the runtime need no IgnoreUnknown.
		{"CNI_ARGS with Kubernetes keys", "", []string{
			"CNI_ARGS=K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1;MAC=" + argsMAC,
		}, argsMAC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNet(t)
			conf := n.mainConf()
			delete(conf, "ipam")
			if tc.confMAC != "" {
				conf["mac"] = tc.confMAC
			}
			list := n.list("1.0.0", conf)
			c := newContainer(t)
			env := append([]string{"CNI_IFNAME=eth0"}, tc.env...)
			t.Cleanup(func() {
				if _, err := n.cnitool(list, "del", c, env...); err != nil {
					t.Logf("cleanup: %v", err)
				}
			})
			out, err := n.cnitool(list, "add", c, env...)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.link(t, "eth0").Attrs().HardwareAddr.String(); got != tc.want {
				t.Errorf("link MAC %s, want %s", got, tc.want)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("cnitool result does not report MAC %s: %s", tc.want, out)
			}
			if _, err := n.cnitool(list, "check", c, env...); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if _, err := n.cnitool(list, "del", c, env...); err != nil {
				t.Errorf("DEL: %v", err)
			}
			wantOnlyLoopback(t, c)
		})
	}
}

// TestGatewayLearnsOnAdd: right after ADD, before the container sends
// anything, the gateway's neighbour table maps both addresses to the
// container's MAC, from the plugin's gratuitous ARP and unsolicited NA.
func TestGatewayLearnsOnAdd(t *testing.T) {
	n := newNet(t)
	c := newContainer(t)
	flushGwNeighbours(t)
	res := n.attach(n.list("1.0.0", n.mainConf()), c, "eth0").mustAdd()
	mac := c.link(t, "eth0").Attrs().HardwareAddr.String()
	v4, v6 := resultIPs(t, res)
	waitGwNeighbour(t, bareIP(v4), mac)
	waitGwNeighbour(t, bareIP(v6), mac)
}

// TestGatewayLearnsNewMAC: the gateway has talked to an address, the
// container goes, and another with a new MAC gets the same address. The
// gateway's entry for it is fresh and points at the old MAC; only the new
// container's announcements can move it before its traffic does, so the
// test sends none.
func TestGatewayLearnsNewMAC(t *testing.T) {
	n := newNet(t)
	list := n.list("1.0.0", n.mainConf())
	ip4, ip6 := "198.51.100.150", "2001:db8:100::150"
	caps := func(mac string) map[string]any {
		return map[string]any{"mac": mac, "ips": []string{ip4 + "/24", ip6 + "/64"}}
	}
	oldMAC, newMAC := macFor(1), macFor(2)

	c1 := newContainer(t)
	a1 := n.attach(list, c1, "eth0").withCaps(caps(oldMAC))
	a1.mustAdd()
	c1.waitSettled(t, c1.link(t, "eth0"))
	wantPing(t, theLab.gw, ip4)
	wantPing(t, theLab.gw, ip6)
	waitGwNeighbour(t, ip4, oldMAC)
	waitGwNeighbour(t, ip6, oldMAC)
	if err := a1.del(); err != nil {
		t.Fatalf("DEL: %v", err)
	}

	c2 := newContainer(t)
	n.attach(list, c2, "eth0").withCaps(caps(newMAC)).mustAdd()
	if got := c2.link(t, "eth0").Attrs().HardwareAddr.String(); got != newMAC {
		t.Fatalf("link MAC %s, want %s", got, newMAC)
	}
	waitGwNeighbour(t, ip4, newMAC)
	waitGwNeighbour(t, ip6, newMAC)
}

// TestAnnouncementsRepeated counts what reaches the gateway during ADD: the
// plugin announces each address a few times (one lost frame must not leave
// the gateway with a stale entry), not just once.
func TestAnnouncementsRepeated(t *testing.T) {
	const want = 2
	ip4, ip6 := "198.51.100.170", "2001:db8:100::170"
	mac := macFor(1)
	capture := captureAtGateway(t)
	n := newNet(t)
	c := newContainer(t)
	n.attach(n.list("1.0.0", n.mainConf()), c, "eth0").
		withCaps(map[string]any{"mac": mac, "ips": []string{ip4 + "/24", ip6 + "/64"}}).
		mustAdd()
	hw, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	arps, nas := capture.announcements(t, net.ParseIP(ip4), net.ParseIP(ip6), hw, want)
	if arps < want {
		t.Errorf("gateway saw %d ARP frames from %s at %s, want at least %d (the kernel's gratuitous ARP and the gateway's resolution)", arps, ip4, mac, want)
	}
	if nas < want {
		t.Errorf("gateway saw %d unsolicited NAs for %s, want at least %d", nas, ip6, want)
	}
}

// TestDNSMerged: the result carries the IPAM's DNS (from its resolvConf)
// merged with the config's "dns".
func TestDNSMerged(t *testing.T) {
	n := newNet(t)
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 198.51.100.53\nsearch ipam.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := n.mainConf()
	conf["ipam"].(map[string]any)["resolvConf"] = resolv
	conf["dns"] = map[string]any{"nameservers": []string{"2001:db8:100::53"}, "search": []string{"conf.example"}}
	c := newContainer(t)
	res := n.attach(n.list("1.0.0", conf), c, "eth0").mustAdd()
	for _, want := range []string{"198.51.100.53", "2001:db8:100::53"} {
		if !slices.Contains(res.DNS.Nameservers, want) {
			t.Errorf("result nameservers %v lack %s", res.DNS.Nameservers, want)
		}
	}
	for _, want := range []string{"ipam.example", "conf.example"} {
		if !slices.Contains(res.DNS.Search, want) {
			t.Errorf("result search %v lacks %s", res.DNS.Search, want)
		}
	}
}
