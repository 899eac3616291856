package macvlan

import (
	"net/netip"
	"testing"
)

func TestMACFromIPv4(t *testing.T) {
	a := MACFromIPv4(netip.MustParseAddr("198.51.100.7"))
	if got, want := a.String(), "02:6d:c6:33:64:07"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if a[0]&1 != 0 || a[0]&2 == 0 {
		t.Errorf("%s: want a unicast, locally administered address", a)
	}
	if b := MACFromIPv4(netip.MustParseAddr("198.51.100.8")); b.String() == a.String() {
		t.Errorf("two addresses gave the same MAC %s", a)
	}
}
