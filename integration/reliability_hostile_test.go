//go:build integration

package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// hostileCase is one piece of hostile input fed straight to the maclan
// binary (as a runtime that does not validate would), with the CNI error
// code it must get. ok means success is acceptable too (the input is odd
// but legal); the outcome must still be correct and DEL must clean up.
type hostileCase struct {
	name        string
	containerID string                          // default: the container's name
	ifName      string                          // default: eth0
	cniArgs     string                          //
	conf        func(conf, ipam map[string]any) // changes to a valid conf
	stdin       func(valid []byte) []byte       // or: raw bytes, from the valid conf
	code        uint                            // the error code wanted
	ok          bool                            // success is acceptable
	mentions    []string                        // what the message must name
	bug         string                          // a known bug: the case is skipped
}

// TestReliabilityHostileInput feeds maclan (and through it maclan-ipam)
// input that tries to escape the data directory, is huge or malformed, or
// describes impossible networks. Each gets a clear error with the right
// code, no plugin panics, nothing is left in the container, and no file
// appears outside the data directory (which sits two levels inside a
// directory that is watched as a whole).
func TestReliabilityHostileInput(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	for _, tc := range []hostileCase{
		// Names that try to leave the data directory.
		{name: "container ID ../../..", containerID: "../../../escape", code: types.ErrInvalidEnvironmentVariables, mentions: []string{"escape"}},
		{name: "container ID with slash", containerID: "a/../../escape", code: types.ErrInvalidEnvironmentVariables},
		{name: "container ID ..", containerID: "..", code: types.ErrInvalidEnvironmentVariables},
		{name: "container ID with =", containerID: "x=eth0", code: types.ErrInvalidEnvironmentVariables},
		{name: "container ID with newline", containerID: "a\nb", code: types.ErrInvalidEnvironmentVariables},
		{name: "container ID of invalid UTF-8", containerID: "a\xff\xfe", code: types.ErrInvalidEnvironmentVariables},
		{name: "interface name ../x", ifName: "../x", code: types.ErrInvalidEnvironmentVariables},
		{name: "interface name ..", ifName: "..", code: types.ErrInvalidEnvironmentVariables},
		{name: "interface name a/b", ifName: "a/b", code: types.ErrInvalidEnvironmentVariables},
		{name: "interface name of invalid UTF-8", ifName: "e\xff\xfe", code: types.ErrInvalidEnvironmentVariables},
		{name: "network name ../../escape", conf: func(c, _ map[string]any) { c["name"] = "../../escape" }, code: types.ErrInvalidNetworkConfig, mentions: []string{"../../escape"}},
		{name: "network name /abs", conf: func(c, _ map[string]any) { c["name"] = "/escape" }, code: types.ErrInvalidNetworkConfig, mentions: []string{"/escape"}},
		{name: "network name ..", conf: func(c, _ map[string]any) { c["name"] = ".." }, code: types.ErrInvalidNetworkConfig},
		{name: "network name of invalid UTF-8", stdin: func(v []byte) []byte { return replaceName(v, "n\xff\xfe") }, code: types.ErrInvalidNetworkConfig},
		{name: "relative dataDir", conf: func(_, i map[string]any) { i["dataDir"] = "../escape" }, code: types.ErrInvalidNetworkConfig, mentions: []string{"../escape"}},
		// Huge and malformed configurations.
		{name: "1 MB config (a long unknown field)", conf: func(c, _ map[string]any) { c["junk"] = big }, ok: true},
		{name: "1 MB config (a long network name)", conf: func(c, _ map[string]any) { c["name"] = big }, code: types.ErrInvalidNetworkConfig},
		{name: "1 MB config (deep nesting)", stdin: func(v []byte) []byte { return nest(v, 1<<19) }, code: types.ErrDecodingFailure},
		{name: "1 MB of garbage", stdin: func([]byte) []byte { return bytes.Repeat([]byte{0xff, '{', '"'}, 1<<20/3) }, code: types.ErrDecodingFailure},
		{name: "invalid UTF-8 in mode", stdin: func(v []byte) []byte { return bytes.Replace(v, []byte(`"bridge"`), []byte("\"br\xffidge\""), 1) }, code: types.ErrInvalidNetworkConfig},
		{name: "invalid UTF-8 in master", conf: func(c, _ map[string]any) { c["master"] = "e\xffh0" }, code: types.ErrInvalidNetworkConfig},
		{name: "CNI_ARGS with 10,000 addresses", cniArgs: "IP=" + manyIPs(10000), code: types.ErrInvalidNetworkConfig},
		// Impossible or odd networks.
		{name: "thousands of ranges in one set", conf: func(_, i map[string]any) { i["ranges"], i["routes"] = manyRanges(4096, 1), []any{} }, ok: true},
		{name: "thousands of range sets", conf: func(_, i map[string]any) { i["ranges"], i["routes"] = manyRanges(rangeSets(), rangeSets()), []any{} }, ok: true},
		{name: "subnet /0", conf: oneRange("0.0.0.0/0"), code: types.ErrInvalidNetworkConfig, mentions: []string{"0.0.0.0/0"}},
		{name: "subnet /31", conf: oneRange("198.51.100.0/31"), code: types.ErrInvalidNetworkConfig, mentions: []string{"198.51.100.0/31", "too small"}},
		{name: "subnet /32", conf: oneRange("198.51.100.7/32"), code: types.ErrInvalidNetworkConfig, mentions: []string{"198.51.100.7/32", "too small"}},
		{name: "subnet ::/0", conf: oneRange("::/0"), code: types.ErrInvalidNetworkConfig, mentions: []string{"::/0"}},
		{name: "subnet /127", conf: oneRange("2001:db8:100::/127"), code: types.ErrInvalidNetworkConfig, mentions: []string{"2001:db8:100::/127", "too small"}},
		{name: "subnet /128", conf: oneRange("2001:db8:100::7/128"), code: types.ErrInvalidNetworkConfig, mentions: []string{"2001:db8:100::7/128", "too small"}},
		{name: "overlapping range sets", conf: func(_, i map[string]any) {
			i["ranges"] = []any{[]any{map[string]any{"subnet": subnet4}}, []any{map[string]any{"subnet": "198.51.100.128/25"}}}
		}, code: types.ErrInvalidNetworkConfig, mentions: []string{"overlaps"}},
		{name: "overlapping ranges in one set", conf: func(_, i map[string]any) {
			i["ranges"] = []any{[]any{map[string]any{"subnet": subnet4, "rangeStart": "198.51.100.10", "rangeEnd": "198.51.100.50"},
				map[string]any{"subnet": subnet4, "rangeStart": "198.51.100.40", "rangeEnd": "198.51.100.60"}}}
		}, code: types.ErrInvalidNetworkConfig},
		{name: "gateway outside its subnet", conf: func(_, i map[string]any) {
			i["ranges"] = []any{[]any{map[string]any{"subnet": subnet4, "gateway": "203.0.113.1"}}}
		}, code: types.ErrInvalidNetworkConfig, mentions: []string{"203.0.113.1"}},
		{name: "rangeStart after rangeEnd", conf: func(_, i map[string]any) {
			i["ranges"] = []any{[]any{map[string]any{"subnet": subnet4, "rangeStart": "198.51.100.90", "rangeEnd": "198.51.100.80"}}}
		}, code: types.ErrInvalidNetworkConfig},
		{name: "negative lockTimeout", conf: func(_, i map[string]any) { i["lockTimeout"] = "-1s" }, code: types.ErrInvalidNetworkConfig, mentions: []string{"lockTimeout"}},
		{name: "bcqueuelen out of range", conf: func(c, _ map[string]any) { c["bcqueuelen"] = -1 }, code: types.ErrInvalidNetworkConfig},
		{name: "mtu 2^40", conf: func(c, _ map[string]any) { c["mtu"] = int64(1) << 40 }, code: types.ErrInvalidNetworkConfig},
	} {
		t.Run(tc.name, func(t *testing.T) { runHostile(t, tc) })
	}
}

func runHostile(t *testing.T, tc hostileCase) {
	if tc.bug != "" {
		t.Skip("bug: " + tc.bug)
	}
	root := t.TempDir()
	n := newNet(t)
	n.dataDir = filepath.Join(root, "a", "data")
	if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := n.mainConf()
	conf["cniVersion"], conf["name"] = "1.1.0", n.name
	delete(conf, "capabilities")
	if tc.conf != nil {
		tc.conf(conf, conf["ipam"].(map[string]any))
	}
	stdin, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	if tc.stdin != nil {
		stdin = tc.stdin(stdin)
	}
	if tc.ok {
		// A container with thousands of addresses announces each (the
		// kernel's arp_notify), and the lab's gateway learns them all
		// (arp_accept). The kernel's neighbour table is one for every
		// namespace (gc_thresh3, 1,024 entries), and it cannot collect
		// entries younger than 5 s: the next test's containers could not
		// get an entry at the gateway ("neighbor table overflow"). So the
		// gateway forgets them when the case ends.
		t.Cleanup(func() {
			if err := run("ip", "-n", theLab.gw.name, "-4", "neigh", "flush", "to", "10.64.0.0/10"); err != nil {
				t.Errorf("flush the gateway's neighbours: %v", err)
			}
		})
	}
	c := newContainer(t)
	id, ifName := c.name, "eth0"
	if tc.containerID != "" {
		id = tc.containerID
	}
	if tc.ifName != "" {
		ifName = tc.ifName
	}
	rc := n.rawCall(pluginType, "ADD", id, c, ifName, stdin, "CNI_ARGS="+tc.cniArgs)
	err = rc.run()
	msg := fmt.Sprint(err)
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	figure(t, "%d bytes of config: code %d in %.0f ms: %s", len(stdin), cniCode(err), float64(rc.dur)/float64(time.Millisecond), msg)
	if rc.panicked() {
		t.Errorf("a plugin panicked: %s", rc.stderr.String())
	}
	switch {
	case err == nil && tc.ok:
		wantHostileResult(t, rc.stdout.Bytes())
	case err == nil:
		t.Errorf("ADD succeeded, want code %d", tc.code)
	case tc.ok:
		if code := cniCode(err); code == 0 || code == types.ErrInternal {
			t.Errorf("got code %d (%v), want a specific code", code, err)
		}
	default:
		wantCNIError(t, err, tc.code, tc.mentions...)
	}
	// DEL, as a runtime sends after any ADD, cleans up whatever was made.
	if derr := n.rawCall(pluginType, "DEL", id, c, ifName, stdin, "CNI_ARGS="+tc.cniArgs).run(); derr != nil && err == nil {
		t.Errorf("DEL after the successful ADD: %v", derr)
	}
	wantOnlyLoopback(t, c)
	for _, p := range treeFiles(t, root) {
		if p != "." && p != "a" && p != filepath.Join("a", "data") && !strings.HasPrefix(p, filepath.Join("a", "data")+"/") {
			t.Errorf("file %s was made outside the data directory", p)
		}
	}
	for _, p := range treeFiles(t, n.dataDir) {
		if strings.HasPrefix(filepath.Base(p), "escape") {
			t.Errorf("file %s in the data directory is named after the hostile input", p)
		}
	}
}

// wantHostileResult checks a successful ADD's addresses: each inside its
// subnet and neither its network nor its gateway address.
func wantHostileResult(t *testing.T, out []byte) {
	t.Helper()
	var r struct {
		IPs []struct {
			Address string `json:"address"`
			Gateway string `json:"gateway"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("ADD result %q: %v", out, err)
	}
	for _, ip := range r.IPs {
		p, err := netip.ParsePrefix(ip.Address)
		if err != nil {
			t.Errorf("result address %q: %v", ip.Address, err)
			continue
		}
		if p.Addr() == p.Masked().Addr() && p.Bits() < p.Addr().BitLen()-1 {
			t.Errorf("result address %s is its network's address", ip.Address)
		}
		if ip.Gateway == p.Addr().String() {
			t.Errorf("result address %s is its gateway", ip.Address)
		}
	}
}

// rangeSets is the number of range sets of the "thousands of range sets"
// case: one ADD takes an address from each, which costs about 15 ms apiece
// here, so make test uses fewer than make reliability.
func rangeSets() int {
	if os.Getenv("MACLAN_RELIABILITY") == "1" {
		return 2048
	}
	return 512
}

func oneRange(cidr string) func(_, ipam map[string]any) {
	return func(_, ipam map[string]any) {
		ipam["ranges"] = []any{[]any{map[string]any{"subnet": cidr}}}
		ipam["routes"] = []any{}
	}
}

// manyRanges makes n distinct /28 ranges of 10.64.0.0/10, in sets of
// perSet (the last set may be smaller).
func manyRanges(n, sets int) []any {
	out := make([]any, 0, sets)
	per := (n + sets - 1) / sets
	base := netip.MustParseAddr("10.64.0.0").As4()
	for i := 0; i < n; i++ {
		a := base
		a[1] += byte(i >> 12)
		a[2] = byte(i >> 4)
		a[3] = byte(i&15) << 4
		r := map[string]any{"subnet": netip.PrefixFrom(netip.AddrFrom4(a), 28).String()}
		if i%per == 0 {
			out = append(out, []any{})
		}
		out[len(out)-1] = append(out[len(out)-1].([]any), r)
	}
	return out
}

func manyIPs(n int) string {
	ips := make([]string, n)
	for i := range ips {
		ips[i] = fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
	}
	return strings.Join(ips, ",")
}

// nest puts depth nested arrays into the conf under "args".
func nest(valid []byte, depth int) []byte {
	deep := strings.Repeat("[", depth) + strings.Repeat("]", depth)
	return bytes.Replace(valid, []byte(`{"cniVersion"`), []byte(`{"args":`+deep+`,"cniVersion"`), 1)
}

// replaceName sets the network name to raw bytes (json.Marshal would
// replace invalid UTF-8).
func replaceName(valid []byte, raw string) []byte {
	var c map[string]any
	if err := json.Unmarshal(valid, &c); err != nil {
		panic(err)
	}
	old, _ := json.Marshal(c["name"])
	return bytes.Replace(valid, []byte(`"name":`+string(old)), []byte(`"name":"`+raw+`"`), 1)
}
