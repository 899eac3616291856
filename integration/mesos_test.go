//go:build integration

package integration

import (
	"encoding/json"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
	types020 "github.com/containernetworking/cni/pkg/types/020"
)

// TestMesosExample runs the shipped single-plugin configuration as the Mesos
// CNI isolator does: it execs the plugin itself (no libcni), with the task's
// NetworkInfo injected as args["org.apache.mesos"], and reads the 0.2.0
// result's ip4. After an agent reboot the task's namespace is gone, and
// Mesos sends DEL without CNI_NETNS: that DEL must release the lease.
func TestMesosExample(t *testing.T) {
	const staticIP = "198.51.100.88"
	n := newNet(t)
	var conf map[string]any
	if err := json.Unmarshal(n.adaptExample("mesos-maclan.conf", []byte(readExample(t, "mesos-maclan.conf"))), &conf); err != nil {
		t.Fatal(err)
	}
	if conf["cniVersion"] != "0.2.0" || conf["plugins"] != nil {
		t.Fatalf("mesos-maclan.conf: cniVersion %v, plugins %v; want a single 0.2.0 plugin (Mesos skips conflists)", conf["cniVersion"], conf["plugins"])
	}
	conf["args"] = map[string]any{
		"org.apache.mesos": map[string]any{
			"network_info": map[string]any{
				"name":         n.name,
				"ip_addresses": []any{map[string]any{"ip_address": staticIP, "protocol": "IPv4"}},
				"labels":       map[string]any{"labels": []any{map[string]any{"key": "app", "value": "web"}}},
			},
		},
	}
	stdin, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}

	c := newContainer(t)
	del := &invoke.Args{Command: "DEL", ContainerID: c.name, IfName: "eth0"} // no CNI_NETNS
	t.Cleanup(func() {
		if _, err := n.execPlugin(del, stdin); err != nil {
			t.Logf("cleanup DEL: %v", err)
		}
	})
	res, err := n.execPlugin(&invoke.Args{Command: "ADD", ContainerID: c.name, NetNS: c.path, IfName: "eth0"}, stdin)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	r, ok := res.(*types020.Result)
	if !ok {
		t.Fatalf("ADD result is a %T, want a 0.2.0 result", res)
	}
	if r.IP4 == nil || r.IP4.IP.String() != staticIP+"/24" {
		t.Fatalf("0.2.0 result ip4 %+v, want ip %s/24", r.IP4, staticIP)
	}
	if r.IP4.Gateway.String() != gw4 {
		t.Errorf("0.2.0 result ip4.gateway %s, want %s", r.IP4.Gateway, gw4)
	}
	if _, ok := c.findAddr(t, c.macvlan(t, "eth0"), staticIP+"/24"); !ok {
		t.Errorf("container eth0 lacks %s/24", staticIP)
	}
	wantPing(t, c, gw4)
	if ipamType == "maclan-ipam" {
		if got := n.lsLeases(); len(got) != 1 || got[0]["ip"] != staticIP || got[0]["containerID"] != c.name {
			t.Errorf("maclan-ipam ls: %v, want %s held by %s", got, staticIP, c.name)
		}
	}

	removeContainer(t, c) // the agent rebooted: the namespace is gone
	if _, err := n.execPlugin(del, stdin); err != nil {
		t.Fatalf("DEL without CNI_NETNS: %v", err)
	}
	if ipamType == "maclan-ipam" {
		if got := n.lsLeases(); len(got) != 0 {
			t.Errorf("maclan-ipam ls after DEL: %v, want no lease", got)
		}
	}
	n.wantNoLeases()
}
