package cniresult

import (
	"bytes"
	"net"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types040 "github.com/containernetworking/cni/pkg/types/040"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// same fails the test unless Print writes what PrintTo writes for r, and
// reports whether the hand encoder (not the fallback) wrote it.
func same(t *testing.T, r types.Result) bool {
	t.Helper()
	var want, got bytes.Buffer
	wantErr := r.PrintTo(&want)
	gotErr := Print(&got, r)
	if (wantErr == nil) != (gotErr == nil) || !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("Print wrote\n%s (err %v)\nPrintTo wrote\n%s (err %v)", got.Bytes(), gotErr, want.Bytes(), wantErr)
	}
	if res, ok := r.(*current.Result); ok {
		_, byHand := Marshal(res)
		return byHand
	}
	return false
}

func cidr(s string) net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return *n
}

func intp(i int) *int { return &i }

// TestPrintMatches: the results maclan and maclan-ipam print, and the
// shapes around them, come out byte for byte as PrintTo writes them, by
// hand where the encoder covers them.
func TestPrintMatches(t *testing.T) {
	full := &current.Result{
		CNIVersion: "1.1.0",
		Interfaces: []*current.Interface{
			{Name: "eth0", Mac: "02:6d:00:00:00:09", Mtu: 1400, Sandbox: "/var/run/netns/x<&>", SocketPath: "/s", PciID: "0000:00:01.0"},
			{Name: ""},
		},
		IPs: []*current.IPConfig{
			{Interface: intp(0), Address: cidr("10.1.0.5/24"), Gateway: net.ParseIP("10.1.0.1")},
			{Address: cidr("2001:db8::5/64"), Gateway: net.ParseIP("2001:db8::1")},
			{Interface: intp(-1), Address: cidr("10.2.0.5/16")},
			{Address: net.IPNet{IP: net.ParseIP("10.3.0.5"), Mask: net.CIDRMask(24, 32)}, Gateway: net.ParseIP("10.3.0.1").To4()},
		},
		Routes: []*types.Route{
			{Dst: cidr("0.0.0.0/0")},
			{Dst: cidr("10.9.0.0/16"), GW: net.ParseIP("10.1.0.254"), MTU: 1300, AdvMSS: 1260, Priority: 7, Table: intp(0), Scope: intp(253)},
			{Dst: cidr("::/0"), GW: net.ParseIP("2001:db8::1")},
		},
		DNS: types.DNS{Nameservers: []string{"10.1.0.53"}, Domain: "lan\u2028", Search: []string{"a", "b\"c"}, Options: []string{"ndots:2"}},
	}
	byHand := []types.Result{
		full,
		&current.Result{},
		&current.Result{CNIVersion: "1.0.0"},
		&current.Result{CNIVersion: "1.0.0", Interfaces: []*current.Interface{}, IPs: []*current.IPConfig{}, Routes: []*types.Route{}},
		&current.Result{CNIVersion: "1.0.0", DNS: types.DNS{Nameservers: []string{}}},
		&current.Result{CNIVersion: "1.0.0", DNS: types.DNS{Domain: "x"}},
		&current.Result{CNIVersion: "1.0.0", IPs: []*current.IPConfig{{Address: net.IPNet{IP: net.ParseIP("10.0.0.1"), Mask: net.IPMask{255, 0, 255, 0}}}}},
		&current.Result{CNIVersion: "1.0.0", IPs: []*current.IPConfig{{Interface: intp(1 << 53), Address: cidr("10.0.0.1/8")}}},
		&current.Result{CNIVersion: "1.0.0", Interfaces: []*current.Interface{{Name: "a\x00\x1f\b\f\n\r\t\\/\u2029é"}}},
	}
	for i, r := range byHand {
		if !same(t, r) {
			t.Errorf("result %d: printed by PrintTo, want by hand", i)
		}
	}
	fallback := []types.Result{
		&current.Result{CNIVersion: "1.0.0", Interfaces: []*current.Interface{nil}},
		&current.Result{CNIVersion: "1.0.0", IPs: []*current.IPConfig{nil}},
		&current.Result{CNIVersion: "1.0.0", Routes: []*types.Route{nil}},
		&current.Result{CNIVersion: "1.0.0", IPs: []*current.IPConfig{{Address: net.IPNet{}}}},
		&current.Result{CNIVersion: "1.0.0", IPs: []*current.IPConfig{{Address: cidr("10.0.0.1/8"), Gateway: net.IP{1, 2, 3}}}},
		&current.Result{CNIVersion: "1.0.0", IPs: []*current.IPConfig{{Interface: intp(1<<53 + 1), Address: cidr("10.0.0.1/8")}}},
		&current.Result{CNIVersion: "1.0.0", DNS: types.DNS{Domain: "\xff"}},
	}
	for i, r := range fallback {
		if same(t, r) {
			t.Errorf("fallback result %d: printed by hand, want by PrintTo", i)
		}
	}
	// Another version's result is PrintTo's.
	old, err := full.GetAsVersion("0.4.0")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := old.(*types040.Result); !ok {
		t.Fatalf("0.4.0 result is %T", old)
	}
	same(t, old)
}

// FuzzPrint: for results built from arbitrary text, numbers and address
// bytes, Print writes what PrintTo writes.
func FuzzPrint(f *testing.F) {
	f.Add("1.0.0", "eth0", "02:00:00:00:00:01", "/var/run/netns/a", []byte{10, 0, 0, 5}, 24, []byte{10, 0, 0, 1}, 1500, "lan", true)
	f.Add("", "", "", "<&>\u2028", []byte{0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5}, 64, []byte{}, -7, "\xff", false)
	f.Fuzz(func(t *testing.T, version, name, mac, sandbox string, ip []byte, prefix int, gw []byte, n int, text string, withInterface bool) {
		if len(ip) > 64 || len(gw) > 64 || len(version)+len(name)+len(mac)+len(sandbox)+len(text) > 4096 {
			return
		}
		mask := net.CIDRMask(prefix&0xff, 8*len(ip))
		if mask == nil {
			mask = net.IPMask(gw)
		}
		var idx *int
		if withInterface {
			idx = &n
		}
		r := &current.Result{
			CNIVersion: version,
			Interfaces: []*current.Interface{{Name: name, Mac: mac, Mtu: n, Sandbox: sandbox, SocketPath: text, PciID: text}},
			IPs:        []*current.IPConfig{{Interface: idx, Address: net.IPNet{IP: ip, Mask: mask}, Gateway: gw}},
			Routes:     []*types.Route{{Dst: net.IPNet{IP: ip, Mask: mask}, GW: gw, MTU: n, AdvMSS: -n, Priority: n / 2, Table: idx, Scope: idx}},
			DNS:        types.DNS{Domain: text, Nameservers: []string{name}, Search: []string{mac, sandbox}},
		}
		if prefix%3 == 0 {
			r.DNS = types.DNS{}
		}
		same(t, r)
	})
}
