package doctor

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/maclan-cni/maclan/pkg/ipam/ipamconf"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		networks string
		master   string
		json     bool
		bad      bool
	}{
		{name: "defaults"},
		{name: "networks between flags", args: []string{"--conf-dir", "/x", "lan", "-o", "json", "dmz"}, networks: "lan dmz", json: true},
		{name: "master and gateways", args: []string{"--master", "eth0", "--gateway", "10.0.0.1,fd00::1"}, master: "eth0"},
		{name: "gateway without master", args: []string{"--gateway", "10.0.0.1"}, bad: true},
		{name: "bad output", args: []string{"-o", "yaml"}, bad: true},
		{name: "bad gateway", args: []string{"--master", "eth0", "--gateway", "ten"}, bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseArgs(tt.args)
			if tt.bad {
				if err == nil {
					t.Errorf("got no error, want a usage error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(o.Networks, " "); got != tt.networks || o.Master != tt.master || o.JSON != tt.json {
				t.Errorf("got networks %q master %q json %v, want %q %q %v", got, o.Master, o.JSON, tt.networks, tt.master, tt.json)
			}
		})
	}
}

func TestLoadTargets(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"10-lan.conflist": `{"cniVersion":"1.0.0","name":"lan","plugins":[{"type":"maclan","master":"eth0","mtu":1400,
			"ipam":{"type":"maclan-ipam","ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/64","gateway":"fd00::fe"}]]}},{"type":"tuning"}]}`,
		"20-other.conflist": `{"cniVersion":"1.0.0","name":"br","plugins":[{"type":"bridge"}]}`,
		"30-single.conf":    `{"cniVersion":"0.4.0","name":"single","type":"maclan","mode":"nonsense"}`,
		"40-junk.json":      `not json`,
		"50-ignored.txt":    `{"name":"x","type":"maclan"}`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	targets, err := loadTargets(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) != 2 {
		t.Fatalf("got %d targets, want lan and single", len(targets))
	}
	lan, single := targets[0], targets[1]
	if lan.network != "lan" || lan.master != "eth0" || lan.conf.MTU != 1400 || lan.ipam == nil {
		t.Errorf("lan: got %+v", lan)
	}
	if got := addrs(lan.gateways); got != "10.1.0.1 fd00::fe" {
		t.Errorf("lan gateways: got %s, want 10.1.0.1 fd00::fe", got)
	}
	if single.network != "single" || single.confErr == nil {
		t.Errorf("single: got network %q error %v, want the bad mode reported", single.network, single.confErr)
	}
	if _, err := loadTargets(dir, []string{"nope"}); err == nil {
		t.Error("a network that is not there: got no error")
	}
}

func addrs(as []netip.Addr) string {
	var s []string
	for _, a := range as {
		s = append(s, a.String())
	}
	return strings.Join(s, " ")
}

func TestPoolUsage(t *testing.T) {
	conf, err := ipamconf.Parse([]byte(`{"name":"n","cniVersion":"1.0.0","ipam":{"type":"maclan-ipam",
		"ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.1","rangeEnd":"10.0.0.21"}],[{"subnet":"fd00::/64"}]],
		"exclude":["10.0.0.21"]}}`), "")
	if err != nil {
		t.Fatal(err)
	}
	lease := func(ip string) store.Lease { return store.Lease{IP: netip.MustParseAddr(ip)} }
	// 10.0.0.1 is the gateway and .21 excluded: 19 usable addresses.
	var leases []store.Lease
	for i := 2; i <= 19; i++ {
		leases = append(leases, lease(fmt.Sprintf("10.0.0.%d", i)))
	}
	tests := []struct {
		n    int
		want Status
		text string
	}{
		{10, OK, "10 of 19"}, {17, OK, "17 of 19 usable addresses leased (89%)"}, {18, Warn, "18 of 19"},
	}
	for _, tt := range tests {
		rs := poolUsage(conf, leases[:tt.n])
		if rs[0].Status != tt.want || !strings.Contains(rs[0].Saw, tt.text) {
			t.Errorf("%d leases: got %s %q, want %s mentioning %q", tt.n, rs[0].Status, rs[0].Saw, tt.want, tt.text)
		}
		if rs[1].Status != OK || !strings.Contains(rs[1].Saw, "too large") {
			t.Errorf("IPv6 /64: got %s %q, want OK, too large to fill", rs[1].Status, rs[1].Saw)
		}
	}
	if r := poolUsage(conf, append(leases, lease("10.0.0.20")))[0]; r.Status != Fail {
		t.Errorf("full: got %s %q, want FAIL", r.Status, r.Saw)
	}
}

func TestParseCallAndSummary(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "maclan.log")
	lines := []string{
		`time=x level=INFO msg=ok plugin=maclan cmd=ADD container=a network=n ifname=eth0 duration=30ms phase.config=10µs phase.ipam=20ms phase.link=2ms`,
		`time=x level=INFO msg=ok plugin=maclan cmd=ADD container=b network=n ifname=eth0 duration=50ms phase.config=12µs phase.ipam=40ms phase.link=3ms`,
		`time=x level=INFO msg=ok plugin=maclan cmd=ADD container=c network=n ifname=eth0 duration=10ms phase.config=11µs phase.ipam=5ms phase.link=1ms`,
		`time=x level=INFO msg=ok plugin=maclan cmd=ADD container=d network=n ifname=eth0 duration=9ms`, // not debug: no phases
		`time=x level=INFO msg=ok plugin=maclan-ipam cmd=ADD duration=1ms phase.x=1ms`,                  // not ours
		`time=x level=INFO msg=attached plugin=maclan cmd=ADD`,
	}
	if err := os.WriteFile(log, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rs := checkTimings(log)
	if len(rs) != 1 {
		t.Fatalf("got %v, want one ADD summary", rs)
	}
	want := "ADD: last 3 calls, median 30ms, slowest 50ms; slowest phase ipam (median 20ms, max 40ms)"
	if !strings.HasPrefix(rs[0].Saw, want) {
		t.Errorf("got %q, want it to start with %q", rs[0].Saw, want)
	}
	if rs := checkTimings(""); rs[0].Status != Skip {
		t.Errorf("no logFile: got %v, want SKIP", rs)
	}
}

func TestReportText(t *testing.T) {
	rep := newReport([]Result{
		{Network: "lan", Check: "master", Status: OK, Saw: "eth0 is up"},
		{Network: "lan", Check: "mtu", Status: Fail, Saw: "too big", Fix: "lower it"},
		{Network: "dmz", Check: "pool", Status: Warn, Saw: "95%", Fix: "widen"},
	}, 0)
	var b bytes.Buffer
	if err := rep.writeText(&b); err != nil {
		t.Fatal(err)
	}
	want := "network lan\nOK    master       eth0 is up\nFAIL  mtu          too big  fix: lower it\n" +
		"network dmz\nWARN  pool         95%  fix: widen\n3 checks, 1 failed, 1 warnings, in 0.0s\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// TestNeighborSolicit checks the packet against RFC 4861 section 4.3 and
// its checksum by summing it again (a correct sum gives all ones).
func TestNeighborSolicit(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	src := linkLocal(mac)
	if src.String() != "fe80::11:22ff:fe33:4455" {
		t.Errorf("link-local: got %s, want fe80::11:22ff:fe33:4455", src)
	}
	target := netip.MustParseAddr("2001:db8::1:2:3")
	pkt, dstMAC := neighborSolicit(src, mac, target)
	if dstMAC.String() != "33:33:ff:02:00:03" {
		t.Errorf("destination MAC: got %s, want 33:33:ff:02:00:03", dstMAC)
	}
	dst := netip.AddrFrom16([16]byte(pkt[24:40]))
	if dst.String() != "ff02::1:ff02:3" || pkt[7] != 255 || int(binary.BigEndian.Uint16(pkt[4:])) != len(pkt)-40 {
		t.Errorf("IPv6 header: got dst %s hop limit %d", dst, pkt[7])
	}
	msg := pkt[40:]
	if sum := icmp6Checksum(src, dst, msg); sum != 0 {
		t.Errorf("checksum does not verify: got %#x, want 0", sum)
	}
	if !bytes.Equal(msg[26:32], mac) {
		t.Errorf("source link-layer option: got %x, want %s", msg[24:32], mac)
	}
}

func TestAdvertisedBy(t *testing.T) {
	target := netip.MustParseAddr("2001:db8::1")
	gwMAC := net.HardwareAddr{0xaa, 0, 0, 0, 0, 1}
	na := func(typ byte, tgt netip.Addr, hop byte, opt bool) []byte {
		msg := make([]byte, 24)
		msg[0] = typ
		a := tgt.As16()
		copy(msg[8:], a[:])
		if opt {
			msg = append(msg, ndpOptTargetLLA, 1, 0xaa, 0, 0, 0, 0, 2)
		}
		h := ipv6Header(target, netip.MustParseAddr("fe80::1"), len(msg))
		h[7] = hop
		return append(h, msg...)
	}
	tests := []struct {
		name string
		pkt  []byte
		want string
	}{
		{"option", na(icmp6NeighborAdvert, target, 255, true), "aa:00:00:00:00:02"},
		{"frame source", na(icmp6NeighborAdvert, target, 255, false), "aa:00:00:00:00:01"},
		{"other target", na(icmp6NeighborAdvert, netip.MustParseAddr("2001:db8::2"), 255, true), ""},
		{"routed", na(icmp6NeighborAdvert, target, 64, true), ""},
		{"solicitation", na(icmp6NeighborSolicit, target, 255, true), ""},
		{"short", []byte{0x60, 0, 0}, ""},
	}
	for _, tt := range tests {
		got := advertisedBy(tt.pkt, target, gwMAC)
		if (got == nil && tt.want != "") || (got != nil && got.String() != tt.want) {
			t.Errorf("%s: got %v, want %q", tt.name, got, tt.want)
		}
	}
}

// FuzzAdvertisedBy: whatever arrives on the probe's socket is read without
// a panic.
func FuzzAdvertisedBy(f *testing.F) {
	target := netip.MustParseAddr("2001:db8::1")
	pkt, _ := neighborSolicit(linkLocal(net.HardwareAddr{2, 0, 0, 0, 0, 1}), net.HardwareAddr{2, 0, 0, 0, 0, 1}, target)
	f.Add(pkt)
	pkt[40] = icmp6NeighborAdvert
	f.Add(pkt)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		_ = advertisedBy(b, target, net.HardwareAddr{1, 2, 3, 4, 5, 6})
	})
}

func TestFreshMAC(t *testing.T) {
	for range 100 {
		mac, err := freshMAC()
		if err != nil {
			t.Fatal(err)
		}
		if mac[0]&1 != 0 || mac[0]&2 == 0 {
			t.Fatalf("got %s, want a locally administered unicast MAC", mac)
		}
	}
}
