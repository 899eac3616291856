//go:build integration

package integration

import (
	"os/exec"
	"strings"
	"testing"
)

// TestChain runs maclan first in a list with the reference tuning and
// portmap plugins, through cnitool, as a user's conflist would.
func TestChain(t *testing.T) {
	n := newNet(t)
	list := n.list("1.0.0",
		n.mainConf(),
		map[string]any{
			"type":    "tuning",
			"promisc": true,
			"sysctl":  map[string]any{"net.ipv4.conf.net1.arp_ignore": "1"},
		},
		map[string]any{
			"type":         "portmap",
			"backend":      "iptables",
			"capabilities": map[string]any{"portMappings": true},
		},
	)
	c := newContainer(t)
	env := []string{
		"CNI_IFNAME=net1",
		`CAP_ARGS={"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]}`,
	}
	t.Cleanup(func() {
		if _, err := n.cnitool(list, "del", c, env...); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	if _, err := n.cnitool(list, "add", c, env...); err != nil {
		t.Fatal(err)
	}

	l := c.macvlan(t, "net1")
	if l.Attrs().Promisc != 1 {
		t.Errorf("net1 not promiscuous: tuning did not see the interface")
	}
	if got, err := c.sysctl("net/ipv4/conf/net1/arp_ignore"); err != nil || got != "1" {
		t.Errorf("net1 arp_ignore %q (%v), want 1", got, err)
	}
	v4, _ := linkAddrs(t, c, l)
	dnat := "--to-destination " + bareIP(v4) + ":80"
	if nat := hostNAT(t); !strings.Contains(nat, dnat) || !strings.Contains(nat, "18080") {
		t.Errorf("host NAT table lacks the DNAT 18080 -> %s:80:\n%s", bareIP(v4), nat)
	}
	if _, err := n.cnitool(list, "check", c, env...); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	wantPing(t, c, gw4)

	for i := 1; i <= 2; i++ {
		if _, err := n.cnitool(list, "del", c, env...); err != nil {
			t.Errorf("DEL #%d: %v", i, err)
		}
	}
	wantOnlyLoopback(t, c)
	if nat := hostNAT(t); strings.Contains(nat, dnat) {
		t.Errorf("host NAT table keeps the DNAT after DEL:\n%s", nat)
	}
	n.wantNoLeases()
}

// hostNAT dumps the lab host's iptables NAT table.
func hostNAT(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", theLab.host.name, "iptables-save", "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save in the lab host: %v: %s", err, out)
	}
	return string(out)
}
