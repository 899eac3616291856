package iprange

import (
	"net/netip"
	"strings"
	"testing"
)

func TestCanonicalizeDefaults(t *testing.T) {
	tests := []struct {
		subnet                 string
		wantStart, wantEnd, gw string
	}{
		{"10.0.0.0/24", "10.0.0.1", "10.0.0.254", "10.0.0.1"},
		{"10.0.0.0/30", "10.0.0.1", "10.0.0.2", "10.0.0.1"},
		{"fd00::/120", "fd00::1", "fd00::ff", "fd00::1"},
		{"::ffff:10.1.0.0/120", "10.1.0.1", "10.1.0.254", "10.1.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.subnet, func(t *testing.T) {
			r := Range{Subnet: netip.MustParsePrefix(tt.subnet)}
			if err := r.Canonicalize(); err != nil {
				t.Fatal(err)
			}
			if r.RangeStart.String() != tt.wantStart || r.RangeEnd.String() != tt.wantEnd || r.Gateway.String() != tt.gw {
				t.Errorf("got %s gw %s, want %s-%s gw %s", r, r.Gateway, tt.wantStart, tt.wantEnd, tt.gw)
			}
		})
	}
}

func TestReservedAndExcluded(t *testing.T) {
	r := Range{Subnet: netip.MustParsePrefix("10.0.0.0/24"), RangeEnd: netip.MustParseAddr("10.0.0.255")}
	if err := r.Canonicalize(); err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]bool{"10.0.0.0": true, "10.0.0.1": true, "10.0.0.255": true, "10.0.0.2": false} {
		if got := r.Reserved(netip.MustParseAddr(ip)); got != want {
			t.Errorf("Reserved(%s) = %v, want %v", ip, got, want)
		}
	}
	ex := []netip.Prefix{netip.MustParsePrefix("10.0.0.16/28")}
	if got, next := Excluded(netip.MustParseAddr("10.0.0.20"), ex); !got || next.String() != "10.0.0.32" {
		t.Errorf("Excluded(10.0.0.20) = %v, %v; want true, 10.0.0.32", got, next)
	}
	if got, _ := Excluded(netip.MustParseAddr("10.0.0.32"), ex); got {
		t.Errorf("Excluded(10.0.0.32) = true, want false")
	}
}

func TestParse(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.5": "10.0.0.5", "10.0.0.5/24": "10.0.0.5", "::ffff:10.0.0.5": "10.0.0.5", "fd00::5/64": "fd00::5"} {
		got, err := ParseAddrOrPrefix(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseAddrOrPrefix(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for in, want := range map[string]string{"10.0.0.7": "10.0.0.7/32", "10.0.0.9/28": "10.0.0.0/28", "fd00::1": "fd00::1/128"} {
		got, err := ParsePrefixOrAddr(in)
		if err != nil || got.String() != want {
			t.Errorf("ParsePrefixOrAddr(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	if _, err := ParseAddrOrPrefix("fe80::1%eth0"); err == nil {
		t.Errorf("zoned address accepted")
	}
}

func TestUnusableSubnets(t *testing.T) {
	for _, sub := range []string{"0.0.0.0/0", "0.0.0.0/8", "127.0.0.0/24", "224.0.0.0/24", "240.0.0.0/24", "::/0", "::/64", "ff02::/64"} {
		r := Range{Subnet: netip.MustParsePrefix(sub)}
		if err := r.Canonicalize(); err == nil || !strings.Contains(err.Error(), "no host may use") {
			t.Errorf("Canonicalize(%s): got %v, want an error saying no host may use it", sub, err)
		}
	}
	for _, sub := range []string{"10.0.0.0/8", "198.51.100.0/24", "2001:db8::/64", "fd00::/8"} {
		r := Range{Subnet: netip.MustParsePrefix(sub)}
		if err := r.Canonicalize(); err != nil {
			t.Errorf("Canonicalize(%s): %v", sub, err)
		}
	}
}
