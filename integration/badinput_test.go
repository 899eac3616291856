//go:build integration

package integration

import (
	"encoding/json"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// Bad input fails with a clear error and the right CNI code, and a failed
// ADD leaves the container namespace and the IPAM as they were.

func TestBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		change  func(conf map[string]any)
		code    uint
		mention string
	}{
		{"missing master", func(c map[string]any) { c["master"] = "nosuch0" }, types.ErrInvalidNetworkConfig, "nosuch0"},
		{"unknown mode", func(c map[string]any) { c["mode"] = "bogus" }, types.ErrInvalidNetworkConfig, "bogus"},
		{"mtu above the master's", func(c map[string]any) { c["mtu"] = masterMTU + 1 }, types.ErrInvalidNetworkConfig, "1501"},
		{"negative mtu", func(c map[string]any) { c["mtu"] = -1 }, types.ErrInvalidNetworkConfig, "-1"},
		{"malformed mac", func(c map[string]any) { c["mac"] = "02:zz" }, types.ErrInvalidNetworkConfig, "02:zz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNet(t)
			conf := n.mainConf()
			tc.change(conf)
			c := newContainer(t)
			_, err := n.attach(n.list("1.0.0", conf), c, "eth0").add()
			t.Logf("ADD: %v", err)
			wantCNIError(t, err, tc.code, tc.mention)
			wantOnlyLoopback(t, c)
			n.wantNoLeases()
		})
	}
}

// TestBadInvocation feeds the plugin input that libcni would refuse before
// running it, as another runtime might send.
func TestBadInvocation(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stdin   func(n *testNet) []byte
		ifName  string
		cniArgs string
		code    uint // 0: any error
	}{
		{
			name:   "malformed JSON",
			stdin:  func(*testNet) []byte { return []byte(`{"cniVersion": "1.0.0", "name": "x", "type": `) },
			ifName: "eth0",
			code:   types.ErrDecodingFailure,
		},
		{
			name:   "interface name over 15 characters",
			stdin:  validConf,
			ifName: "eth0123456789012",
			code:   types.ErrInvalidEnvironmentVariables,
		},
		{
			name:    "malformed CNI_ARGS",
			stdin:   validConf,
			ifName:  "eth0",
			cniArgs: "MAC",
			code:    types.ErrInvalidEnvironmentVariables,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNet(t)
			c := newContainer(t)
			err := n.execRaw("ADD", tc.stdin(n), c, tc.ifName, tc.cniArgs)
			t.Logf("ADD: %v", err)
			if err == nil {
				t.Fatal("ADD succeeded, want an error")
			}
			if tc.code != 0 {
				wantCNIError(t, err, tc.code)
			} else if cniCode(err) == 0 {
				t.Errorf("error %v carries no CNI code", err)
			}
			wantOnlyLoopback(t, c)
			n.wantNoLeases()
		})
	}
}

func validConf(n *testNet) []byte {
	conf := n.mainConf()
	conf["cniVersion"] = "1.0.0"
	conf["name"] = n.name
	b, err := json.Marshal(conf)
	if err != nil {
		n.t.Fatal(err)
	}
	return b
}

// TestAddFailureAfterLink makes ADD fail once the link exists: the IPAM
// cannot be run, or the IPv6 address it gives is a duplicate on the LAN.
// The link is removed from the container and the lease released.
func TestAddFailureAfterLink(t *testing.T) {
	t.Run("IPAM missing", func(t *testing.T) {
		n := newNet(t)
		conf := n.mainConf()
		conf["ipam"].(map[string]any)["type"] = "mlt-no-such-ipam"
		c := newContainer(t)
		_, err := n.attach(n.list("1.0.0", conf), c, "eth0").add()
		t.Logf("ADD: %v", err)
		wantErrorMentions(t, err, "mlt-no-such-ipam")
		wantOnlyLoopback(t, c)
	})

	t.Run("duplicate IPv6 address", func(t *testing.T) {
		const dup = "2001:db8:100::1f0"
		gw := theLab.gw.name
		theLab.ip(t, "-n", gw, "addr", "add", dup+"/64", "dev", gwIf, "nodad")
		t.Cleanup(func() {
			if err := run("ip", "-n", gw, "addr", "del", dup+"/64", "dev", gwIf); err != nil {
				t.Errorf("remove %s from the gateway: %v", dup, err)
			}
		})
		n := newNet(t)
		c := newContainer(t)
		a := n.attach(n.list("1.0.0", n.mainConf()), c, "eth0").
			withCaps(map[string]any{"ips": []string{"198.51.100.160/24", dup + "/64"}})
		_, err := a.add()
		t.Logf("ADD: %v", err)
		if err == nil {
			t.Fatalf("ADD with %s taken by the gateway succeeded, want a DAD failure", dup)
		}
		wantErrorMentions(t, err, dup)
		wantOnlyLoopback(t, c)
		n.wantNoLeases()
	})
}
