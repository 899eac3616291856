package ifconfig

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/maclan-cni/maclan/pkg/netnstest"
)

// pair makes a veth pair: "eth0" in cont, its peer "eth0p" up in peer.
func pair(t *testing.T, cont, peer ns.NetNS) {
	t.Helper()
	netnstest.Veth(t, cont, "eth0")
	h, ph := netnstest.Handle(t, cont), netnstest.Handle(t, peer)
	p, err := h.LinkByName("eth0p")
	if err == nil {
		err = h.LinkSetNsFd(p, int(peer.Fd()))
	}
	if err == nil {
		p, err = ph.LinkByName("eth0p")
	}
	if err == nil {
		err = ph.LinkSetUp(p)
	}
	if err != nil {
		t.Fatalf("move eth0p to the peer: %v", err)
	}
	// Down until Configure brings it up, as a new macvlan is.
	l, err := h.LinkByName("eth0")
	if err == nil {
		err = h.LinkSetDown(l)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func ipc(cidr, gw string) *current.IPConfig {
	ip, n, _ := net.ParseCIDR(cidr)
	n.IP = ip
	return &current.IPConfig{Address: *n, Gateway: net.ParseIP(gw)}
}

func route(dst, gw string) *types.Route {
	_, n, _ := net.ParseCIDR(dst)
	return &types.Route{Dst: *n, GW: net.ParseIP(gw)}
}

// configure runs Configure on eth0 of cont as the plugin does: through a
// handle bound to cont, from a thread inside it.
func configure(t *testing.T, cont ns.NetNS, res *current.Result) error {
	t.Helper()
	h := netnstest.Handle(t, cont)
	link, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	return cont.Do(func(ns.NetNS) error { return Configure(h, link, res, opts()) })
}

func opts() Options {
	return Options{DADTimeout: 10 * time.Second, DADRetrans: 20 * time.Millisecond, Announcements: 1}
}

// TestConfigureVerify: Configure puts the addresses and routes on the
// link, brings it up and waits out IPv6 DAD; Verify then finds them all,
// and names what is missing.
func TestConfigureVerify(t *testing.T) {
	netnstest.RequireRoot(t)
	cont, peer := netnstest.NewNS(t), netnstest.NewNS(t)
	pair(t, cont, peer)
	res := &current.Result{
		IPs: []*current.IPConfig{ipc("10.1.0.5/24", "10.1.0.1"), ipc("2001:db8::5/64", "2001:db8::1")},
		Routes: []*types.Route{
			route("0.0.0.0/0", ""), route("::/0", ""), route("198.51.100.0/24", "10.1.0.9"),
		},
	}
	if err := configure(t, cont, res); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	h := netnstest.Handle(t, cont)
	link, err := h.LinkByName("eth0")
	if err != nil || link.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("eth0: %v, want it up", err)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.IP.Equal(net.ParseIP("2001:db8::5")) && a.Flags&unix.IFA_F_TENTATIVE != 0 {
			t.Errorf("2001:db8::5 is still tentative after Configure")
		}
	}
	if err := Verify(h, "eth0", res.IPs, res.Routes); err != nil {
		t.Errorf("Verify: %v", err)
	}
	for _, tc := range []struct {
		name   string
		ips    []*current.IPConfig
		routes []*types.Route
		want   string
	}{
		{"missing address", []*current.IPConfig{ipc("10.1.0.6/24", "")}, nil, `container interface "eth0" lacks address 10.1.0.6/24`},
		{"missing route", nil, []*types.Route{route("203.0.113.0/24", "10.1.0.9")}, "route to 203.0.113.0/24 via 10.1.0.9 is missing in the container"},
		{"no such interface", nil, nil, `container interface "eth1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ifName := "eth0"
			if tc.name == "no such interface" {
				ifName = "eth1"
			}
			if err := Verify(h, ifName, tc.ips, tc.routes); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestConfigureDuplicateIPv6: DAD finds the address on a neighbour, and
// Configure fails with ErrDuplicateAddress (RFC 4862, section 5.4.5).
func TestConfigureDuplicateIPv6(t *testing.T) {
	netnstest.RequireRoot(t)
	cont, peer := netnstest.NewNS(t), netnstest.NewNS(t)
	pair(t, cont, peer)
	ph := netnstest.Handle(t, peer)
	p, err := ph.LinkByName("eth0p")
	if err != nil {
		t.Fatal(err)
	}
	held := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("2001:db8::7"), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}
	if err := ph.AddrAdd(p, held); err != nil {
		t.Fatal(err)
	}
	res := &current.Result{IPs: []*current.IPConfig{ipc("2001:db8::7/64", "")}}
	err = configure(t, cont, res)
	if !errors.Is(err, ErrDuplicateAddress) {
		t.Errorf("got %v, want ErrDuplicateAddress", err)
	}
}
