//go:build integration

package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// TestExamples drives every file of conflist-examples/ through ADD, CHECK,
// DEL and DEL in the lab. The examples are written for the lab's LAN (master
// eth0, 198.51.100.0/24, 2001:db8:100::/64); the test only moves the IPAM's
// state into a temporary directory and, when the suite runs against another
// plugin or IPAM, swaps the types.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../conflist-examples/*.conflist")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no conflist-examples/*.conflist found")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			n := newNet(t)
			list := n.exampleList(file)
			c := newContainer(t)
			a := n.attach(list, c, "eth0")
			res := a.mustAdd()
			if len(res.Interfaces) == 0 {
				t.Errorf("ADD result has no interface: %v", res)
			}
			c.macvlan(t, "eth0")
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

// exampleList loads an example file, adapted to the test as described above.
func (n *testNet) exampleList(file string) *libcni.NetworkConfigList {
	n.t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		n.t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		n.t.Fatalf("%s: %v", file, err)
	}
	raw["name"] = n.name
	plugins, _ := raw["plugins"].([]any)
	for _, p := range plugins {
		plugin, _ := p.(map[string]any)
		if plugin["type"] == "maclan" {
			plugin["type"] = pluginType
		}
		ipam, ok := plugin["ipam"].(map[string]any)
		if !ok {
			continue
		}
		if ipam["type"] == "maclan-ipam" {
			ipam["type"] = ipamType
		}
		ipam["dataDir"] = n.dataDir
		if store, ok := ipam["store"].(map[string]any); ok {
			store["dir"] = n.dataDir
		}
	}
	b, err = json.Marshal(raw)
	if err != nil {
		n.t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		n.t.Fatalf("%s: %v", file, err)
	}
	return list
}
