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

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// examplesWithOwnTest are the files of conflist-examples/ that TestExamples
// leaves to a test of their client: they need a server (DHCP, etcd), are not a
// conflist (Mesos reads single-plugin files; Multus gets the configuration
// from Kubernetes objects), or need what the client adds (a pod's request).
var examplesWithOwnTest = map[string]string{
	"50-maclan-etcd.conflist": "TestCnitoolEtcdStore",
	"dhcp-maclan.conflist":    "TestDHCPExample",
	"mesos-maclan.conf":       "TestMesosExample",
	"multus-nad.yaml":         "TestMultusExample",
	"multus-pod.yaml":         "TestMultusExample",
}

// TestExamples drives every conflist of conflist-examples/ through ADD,
// CHECK, DEL and DEL in the lab. The examples are written for the lab's LAN
// (master eth0, 198.51.100.0/24, 2001:db8:100::/64); the test only moves the
// IPAM's state into a temporary directory and, when the suite runs against
// another plugin or IPAM, swaps the types.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../conflist-examples/*.conflist")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no conflist-examples/*.conflist found")
	}
	for _, file := range files {
		if _, ok := examplesWithOwnTest[filepath.Base(file)]; ok {
			continue
		}
		t.Run(filepath.Base(file), func(t *testing.T) {
			n := newNet(t)
			list := n.exampleList(file)
			if bytes.Contains(list.Bytes, []byte(`"hostShim"`)) {
				t.Cleanup(func() { _ = os.RemoveAll(shimState()) }) // the shim's lock file outlives it
			}
			c := newContainer(t)
			a := n.attach(list, c, "eth0")
			res := a.mustAdd()
			if len(res.Interfaces) == 0 {
				t.Errorf("ADD result has no interface: %v", res)
			}
			l := c.macvlan(t, "eth0")
			if macFromIPExample(list) {
				wantMACFromIP(t, res, l.Attrs().HardwareAddr.String())
			}
			wantPing(t, c, gw4)
			if err := a.check(); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			for i := 1; i <= 2; i++ {
				if err := a.del(); err != nil {
					t.Errorf("DEL #%d: %v", i, err)
				}
			}
			wantOnlyLoopback(t, c)
			n.wantNoLeases()
		})
	}
}

// TestExamplesCovered keeps the promise of conflist-examples/README.md: every
// file there is listed in its table and loaded by a test.
func TestExamplesCovered(t *testing.T) {
	entries, err := os.ReadDir("../conflist-examples")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../conflist-examples/README.md")
	if err != nil {
		t.Fatal(err)
	}
	var sources strings.Builder
	tests, _ := filepath.Glob("*_test.go") // a glob of a fixed pattern cannot fail
	for _, f := range tests {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sources.Write(b)
	}
	for _, e := range entries {
		name := e.Name()
		if name == "README.md" {
			continue
		}
		if !strings.Contains(string(readme), "`"+name+"`") {
			t.Errorf("conflist-examples/README.md does not list %s", name)
		}
		test, ok := examplesWithOwnTest[name]
		switch {
		case ok && !strings.Contains(sources.String(), "func "+test+"(t *testing.T)"):
			t.Errorf("%s: its test %s does not exist", name, test)
		case !ok && !strings.HasSuffix(name, ".conflist"):
			t.Errorf("%s: no test loads it (add it to examplesWithOwnTest)", name)
		}
	}
}

// exampleList loads an example conflist, adapted to the test as described
// above.
func (n *testNet) exampleList(file string) *libcni.NetworkConfigList {
	n.t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		n.t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(n.adaptExample(file, b))
	if err != nil {
		n.t.Fatalf("%s: %v", file, err)
	}
	return list
}

// adaptExample renames the network of an example configuration (a conflist
// or a single plugin's) to the test's, and adapts each plugin with
// adaptPlugin.
func (n *testNet) adaptExample(what string, b []byte) []byte {
	n.t.Helper()
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		n.t.Fatalf("%s: %v", what, err)
	}
	raw["name"] = n.name
	if plugins, ok := raw["plugins"].([]any); ok {
		for _, p := range plugins {
			plugin, _ := p.(map[string]any)
			n.adaptPlugin(plugin)
		}
	} else {
		n.adaptPlugin(raw)
	}
	b, err := json.Marshal(raw)
	if err != nil {
		n.t.Fatal(err)
	}
	return b
}

// adaptPlugin swaps the plugin and IPAM types for the ones under test and
// moves the IPAM's state into the test's directory.
func (n *testNet) adaptPlugin(plugin map[string]any) {
	if plugin["type"] == "maclan" {
		plugin["type"] = pluginType
	}
	ipam, ok := plugin["ipam"].(map[string]any)
	if !ok {
		return
	}
	if ipam["type"] == "maclan-ipam" {
		ipam["type"] = ipamType
	}
	if ipam["type"] == "dhcp" {
		return // its state is the DHCP server's
	}
	ipam["dataDir"] = n.dataDir
	if store, ok := ipam["store"].(map[string]any); ok {
		store["dir"] = n.dataDir
	}
}

// macFromIPExample reports whether list turns macFromIP on in a maclan
// plugin, when the suite runs against maclan (the reference macvlan has no
// such field).
func macFromIPExample(list *libcni.NetworkConfigList) bool {
	if pluginType != "maclan" {
		return false
	}
	for _, p := range list.Plugins {
		var conf struct {
			Type      string `json:"type"`
			MACFromIP bool   `json:"macFromIP"`
		}
		if json.Unmarshal(p.Bytes, &conf) == nil && conf.Type == "maclan" && conf.MACFromIP {
			return true
		}
	}
	return false
}

// macOfIPv4 is the MAC that macFromIP derives from an IPv4 address (a CIDR
// or a bare address): 02:6d, then the four bytes of the address
// (pkg/macvlan.MACFromIPv4), written out here again so that the test does
// not share the code it checks.
func macOfIPv4(t *testing.T, addr string) string {
	t.Helper()
	a, err := netip.ParseAddr(bareIP(addr))
	if err != nil || !a.Is4() {
		t.Fatalf("%q is not an IPv4 address (%v)", addr, err)
	}
	b := a.As4()
	return fmt.Sprintf("02:6d:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

// wantMACFromIP checks that the ADD result and the kernel (kernelMAC) give
// the interface the MAC derived from the result's IPv4 address.
func wantMACFromIP(t *testing.T, res *current.Result, kernelMAC string) {
	t.Helper()
	v4, _ := resultIPs(t, res)
	if v4 == "" {
		t.Fatalf("ADD result has no IPv4 address to derive a MAC from: %v", res)
	}
	want := macOfIPv4(t, v4)
	if len(res.Interfaces) == 0 || res.Interfaces[0].Mac != want {
		t.Errorf("ADD result interfaces %v, want the first with MAC %s (from %s)", res.Interfaces, want, v4)
	}
	if kernelMAC != want {
		t.Errorf("kernel MAC of eth0 %s, want %s (from %s)", kernelMAC, want, v4)
	}
}
