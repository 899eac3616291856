package shim

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/netnstest"
)

// TestAttachDetach: the first attachment makes the shim with its address
// and a route per container address; the last detach removes it. All in a
// throwaway namespace whose master is a veth end.
func TestAttachDetach(t *testing.T) {
	netnstest.RequireRoot(t)
	host := netnstest.NewNS(t)
	netnstest.Veth(t, host, "m0")
	h := netnstest.Handle(t, host)
	sh := func() *Shim {
		return &Shim{H: h, Master: "m0", Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.250")},
			StateDir: filepath.Join(t.TempDir(), "netns-1"), Timeout: time.Second}
	}
	s := sh()
	c1 := []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")}
	c2 := []netip.Addr{netip.MustParseAddr("192.0.2.11")}
	if err := s.Attach("c1:eth0", c1); err != nil {
		t.Fatalf("Attach c1: %v", err)
	}
	if err := s.Attach("c2:eth0", c2); err != nil {
		t.Fatalf("Attach c2: %v", err)
	}
	// A fresh value, as CHECK has: what it verifies is on the host.
	v := &Shim{H: h, Master: "m0", Addresses: s.Addresses, StateDir: s.StateDir, Timeout: time.Second}
	// The shim has no IPv6 address: the IPv6 container address gets no route.
	if err := v.Verify(append(c1, c2...)); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if err := v.Verify([]netip.Addr{netip.MustParseAddr("192.0.2.12")}); err == nil || !strings.Contains(err.Error(), `host shim "shim-m0" has no route to 192.0.2.12`) {
		t.Errorf("Verify of an unrouted address: got %v", err)
	}
	if err := s.Detach("c1:eth0"); err != nil {
		t.Fatalf("Detach c1: %v", err)
	}
	if err := v.Verify(c2); err != nil {
		t.Errorf("Verify after c1 left: %v", err)
	}
	if err := v.Verify(c1[:1]); err == nil {
		t.Errorf("Verify finds c1's route after its detach")
	}
	if err := s.Detach("c2:eth0"); err != nil {
		t.Fatalf("Detach c2: %v", err)
	}
	if _, err := h.LinkByName(Name("m0")); err == nil {
		t.Errorf("the shim is left after its last detach")
	}
	if err := s.Detach("c2:eth0"); err != nil {
		t.Errorf("second Detach: %v", err)
	}
}

// TestAttachRestoresDeletedShim: a shim deleted by hand is made again by
// the next Attach, with the routes of every recorded attachment.
func TestAttachRestoresDeletedShim(t *testing.T) {
	netnstest.RequireRoot(t)
	host := netnstest.NewNS(t)
	netnstest.Veth(t, host, "m0")
	h := netnstest.Handle(t, host)
	s := &Shim{H: h, Master: "m0", Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.250")},
		StateDir: filepath.Join(t.TempDir(), "netns-1"), Timeout: time.Second}
	c1 := []netip.Addr{netip.MustParseAddr("192.0.2.10")}
	if err := s.Attach("c1:eth0", c1); err != nil {
		t.Fatal(err)
	}
	link, err := h.LinkByName(Name("m0"))
	if err == nil {
		err = h.LinkDel(link)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Attach("c2:eth0", []netip.Addr{netip.MustParseAddr("192.0.2.11")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(append(c1, netip.MustParseAddr("192.0.2.11"))); err != nil {
		t.Errorf("Verify: %v", err)
	}
}
