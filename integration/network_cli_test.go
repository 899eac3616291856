//go:build integration

package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// TestNetworkCLICreateInspect: a network made by the built `maclan network
// create` with Docker's flags works for cnitool as it is; `maclan network
// inspect` then shows the attachment with the addresses of the ADD result,
// the MAC of the container's interface (from libcni's cache, where cnitool
// keeps its results) and the workload name of CNI_ARGS; `rm` refuses while
// the lease is held and succeeds after DEL.
func TestNetworkCLICreateInspect(t *testing.T) {
	if pluginType != "maclan" || ipamType != "maclan-ipam" {
		t.Skip("maclan network writes maclan with maclan-ipam")
	}
	n := &cnitoolNet{testNet: newNet(t), env: []string{"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=web"}}
	const cacheDir = "/var/lib/cni" // cnitool's libcni cache
	network := func(args ...string) (string, error) {
		t.Helper()
		full := append([]string{"network", args[0], "--conf-dir", n.netDir, "--cni-cache-dir", cacheDir}, args[1:]...)
		var out []byte
		err := theLab.inHost(func() error { // by hand: no CNI_COMMAND
			var err error
			cmd := exec.Command(filepath.Join(theLab.binDir, "maclan"), full...)
			cmd.Env = cleanEnv()
			out, err = cmd.CombinedOutput()
			return err
		})
		return string(out), err
	}
	if out, err := network("create", "-d", "macvlan", "--subnet", subnet4, "--gateway", gw4, "--ip-range", "198.51.100.128/25",
		"--aux-address", "printer=198.51.100.128", "--ipv6", "--subnet", subnet6, "--gateway", gw6,
		"-o", "parent="+masterIf, "-o", "macvlan_mode=bridge", "--data-dir", n.dataDir, n.name); err != nil {
		t.Fatalf("create: %v: %s", err, out)
	}
	list, err := libcni.ConfListFromFile(filepath.Join(n.netDir, n.name+".conflist"))
	if err != nil {
		t.Fatal(err)
	}
	c := newContainer(t)
	t.Cleanup(func() {
		if _, err := n.cnitool(list, "del", c, n.env...); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	res := cnitoolAdd(t, n, list, c)
	v4, v6 := resultIPs(t, res)
	wantInRange(t, v4, "198.51.100.129", "198.51.100.254") // .128 is the aux address
	wantPing(t, c, gw4)
	wantPing(t, c, gw6)
	mac := c.macvlan(t, "eth0").Attrs().HardwareAddr.String()

	out, err := network("inspect", n.name)
	if err != nil {
		t.Fatalf("inspect: %v: %s", err, out)
	}
	var got []struct {
		Containers map[string]struct{ Name, IfName, MacAddress, IPv4Address, IPv6Address string }
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 1 {
		t.Fatalf("inspect printed %s: %v", out, err)
	}
	if len(got[0].Containers) != 1 {
		t.Fatalf("inspect: got containers %+v, want one", got[0].Containers)
	}
	for id, ctr := range got[0].Containers {
		if !strings.HasPrefix(id, "cnitool-") || ctr.Name != "web" || ctr.IfName != "eth0" || ctr.MacAddress != mac || ctr.IPv4Address != v4 || ctr.IPv6Address != v6 {
			t.Errorf("inspect: got %s %+v, want a cnitool ID, web, eth0, %s, %s, %s", id, ctr, mac, v4, v6)
		}
	}

	if out, err := network("rm", n.name); err == nil || !strings.Contains(out, "has active endpoints") {
		t.Errorf("rm while attached: %v: %s, want a refusal naming active endpoints", err, out)
	}
	cnitoolCheckDel(t, n, list, c)
	if out, err := network("rm", n.name); err != nil {
		t.Errorf("rm after DEL: %v: %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(n.netDir, n.name+".conflist")); !os.IsNotExist(err) {
		t.Errorf("after rm the conflist is still there: %v", err)
	}
}
