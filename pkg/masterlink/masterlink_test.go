package masterlink

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/maclan-cni/maclan/pkg/netnstest"
)

func TestLookup(t *testing.T) {
	netnstest.RequireRoot(t)
	host := netnstest.NewNS(t)
	m0 := netnstest.Veth(t, host, "m0")
	m1 := netnstest.Veth(t, host, "m1")
	h := netnstest.Handle(t, host)

	if _, err := Lookup(h, "", "host"); err == nil || !strings.Contains(err.Error(), `field "master" is empty and the host namespace has no default route`) {
		t.Errorf("no default route: got %v", err)
	}
	// The default route goes out of m1, so m1 is the master.
	gw := net.IPv4(192, 0, 2, 1)
	if err := h.AddrAdd(m1, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(192, 0, 2, 2), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: m1.Attrs().Index, Gw: gw}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, want string }{{"", "m1"}, {"m0", "m0"}} {
		l, err := Lookup(h, tc.name, "host")
		if err != nil || l.Attrs().Name != tc.want {
			t.Errorf("Lookup(%q): got %v, %v; want %s", tc.name, l, err, tc.want)
		}
	}
	_, err := Lookup(h, "nope0", "host")
	if !errors.Is(err, ErrNotFound) || err.Error() != `master "nope0" in the host network namespace: master interface not found` {
		t.Errorf("missing master: got %v", err)
	}
	if err := Ready(m0); err != nil {
		t.Errorf("Ready(m0): %v", err)
	}
	if err := h.LinkSetDown(m0); err != nil {
		t.Fatal(err)
	}
	m0, _ = h.LinkByName("m0")
	if err := Ready(m0); err == nil || err.Error() != `master "m0" is down` {
		t.Errorf("Ready(down m0): got %v", err)
	}
}

func TestReadyNeedsCarrier(t *testing.T) {
	for _, tc := range []struct {
		state netlink.LinkOperState
		want  string
	}{
		{netlink.OperUp, ""},
		{netlink.OperUnknown, ""},
		{netlink.OperDown, `master "m0" has no carrier (operstate down)`},
		{netlink.OperLowerLayerDown, `master "m0" has no carrier (operstate lower-layer-down)`},
	} {
		a := netlink.NewLinkAttrs()
		a.Name, a.Flags, a.OperState = "m0", net.FlagUp, tc.state
		err := Ready(&netlink.Dummy{LinkAttrs: a})
		if got := errText(err); got != tc.want {
			t.Errorf("operstate %s: got %q, want %q", tc.state, got, tc.want)
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
