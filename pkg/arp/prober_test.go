package arp

import (
	"net"
	"net/netip"
	"testing"
)

// TestProberOwnsLocalAddresses: the host's own address on the interface is
// in use by the host, though a probe would not hear it; no packet is sent
// (interface index 0 could not be probed).
func TestProberOwnsLocalAddresses(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	p := &Prober{MAC: mac, Local: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}
	got, err := p.Owner(netip.MustParseAddr("192.0.2.1"))
	if err != nil || got.String() != mac.String() {
		t.Errorf("got %v, %v; want %s, nil", got, err, mac)
	}
}
