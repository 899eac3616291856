//go:build integration

package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// TestDHCPExample runs the shipped DHCP example against a real DHCP server:
// dnsmasq serves the LAN from the gateway namespace, the reference dhcp
// daemon runs in the lab host namespace (it enters the container namespaces
// to run the client), and maclan delegates to the dhcp IPAM. The container
// gets its address from dnsmasq, and DEL releases the lease at the server.
func TestDHCPExample(t *testing.T) {
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Skip("dnsmasq not installed (Debian: dnsmasq-base)")
	}
	const poolStart, poolEnd = "198.51.100.50", "198.51.100.59"
	dir := t.TempDir()
	leaseFile := startDnsmasq(t, dir, poolStart, poolEnd)
	socket := startDHCPDaemon(t, dir)

	n := newNet(t)
	b, err := os.ReadFile("../conflist-examples/dhcp-maclan.conflist")
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(n.adaptExample("dhcp-maclan.conflist", b), &raw); err != nil {
		t.Fatal(err)
	}
	ipam := raw["plugins"].([]any)[0].(map[string]any)["ipam"].(map[string]any)
	if ipam["type"] != "dhcp" {
		t.Fatalf("dhcp-maclan.conflist: IPAM type %v, want dhcp", ipam["type"])
	}
	ipam["daemonSocketPath"] = socket
	b, err = json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}

	c := newContainer(t)
	a := n.attach(list, c, "eth0")
	res := a.mustAdd()
	v4, _ := resultIPs(t, res)
	ip := bareIP(v4)
	if !strings.HasPrefix(v4, "198.51.100.5") || !strings.HasSuffix(v4, "/24") {
		t.Fatalf("ADD result IPv4 %q, want one of dnsmasq's pool %s-%s /24", v4, poolStart, poolEnd)
	}
	l := c.macvlan(t, "eth0")
	if _, ok := c.findAddr(t, l, v4); !ok {
		t.Errorf("container eth0 lacks %s", v4)
	}
	c.wantDefaultRoute(t, l, netlink.FAMILY_V4, gw4) // from the DHCP router option
	wantPing(t, c, gw4)
	mac := l.Attrs().HardwareAddr.String()
	waitFor(t, "dnsmasq lease of "+ip, func() (bool, string) {
		leases := dnsmasqLeases(t, leaseFile)
		return strings.Contains(leases, mac+" "+ip+" "), fmt.Sprintf("%q", leases)
	})
	if err := a.check(); err != nil {
		t.Errorf("CHECK: %v", err)
	}

	for i := 1; i <= 2; i++ {
		if err := a.del(); err != nil {
			t.Errorf("DEL #%d: %v", i, err)
		}
	}
	wantOnlyLoopback(t, c)
	waitFor(t, "dnsmasq releases "+ip, func() (bool, string) {
		leases := dnsmasqLeases(t, leaseFile)
		return !strings.Contains(leases, " "+ip+" "), fmt.Sprintf("%q", leases)
	})
}

// startDnsmasq runs dnsmasq as the LAN's DHCP server in the gateway
// namespace, DNS off, until the test ends; it returns the lease file.
func startDnsmasq(t *testing.T, dir, poolStart, poolEnd string) string {
	t.Helper()
	leaseFile := filepath.Join(dir, "dnsmasq.leases")
	pidFile := filepath.Join(dir, "dnsmasq.pid")
	// --user=root: it keeps writing the lease file in the test's root-only
	// directory; --port=0: no DNS; --no-ping: no probe before an offer.
	cmd := exec.Command("dnsmasq",
		"--keep-in-foreground", "--conf-file=/dev/null", "--user=root", "--port=0",
		"--interface="+gwIf, "--bind-interfaces", "--no-ping",
		"--dhcp-range="+poolStart+","+poolEnd+",255.255.255.0,1h",
		"--dhcp-leasefile="+leaseFile, "--pid-file="+pidFile,
		"--log-dhcp", "--log-facility=-")
	cmd.Stdout, cmd.Stderr = testLogWriter{t}, testLogWriter{t}
	startIn(t, theLab.gw, cmd)
	waitFor(t, "dnsmasq pid file", func() (bool, string) {
		_, err := os.Stat(pidFile)
		return err == nil, fmt.Sprint(err)
	})
	if t.Failed() {
		t.FailNow()
	}
	return leaseFile
}

// startDHCPDaemon runs the reference dhcp daemon in the lab host namespace
// until the test ends; it returns its socket.
func startDHCPDaemon(t *testing.T, dir string) string {
	t.Helper()
	socket := filepath.Join(dir, "dhcp.sock")
	cmd := exec.Command(filepath.Join(theLab.toolsDir, "dhcp"), "daemon", "-socketpath", socket)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = testLogWriter{t}, testLogWriter{t}
	startIn(t, theLab.host, cmd)
	waitFor(t, "dhcp daemon socket", func() (bool, string) {
		_, err := os.Stat(socket)
		return err == nil, fmt.Sprint(err)
	})
	if t.Failed() {
		t.FailNow()
	}
	return socket
}

// startIn starts cmd in the namespace n (the lab host's only after the
// safety guard) and stops it when the test ends.
func startIn(t *testing.T, n *netNS, cmd *exec.Cmd) {
	t.Helper()
	start := func(ns.NetNS) error { return cmd.Start() }
	var err error
	if n == theLab.host {
		err = theLab.inHost(func() error { return start(nil) })
	} else {
		err = n.ns.Do(start)
	}
	if err != nil {
		t.Fatalf("start %s in %s: %v", cmd.Path, n.name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // it may have exited already; Wait tells
		if err := cmd.Wait(); err != nil && !isKilled(err) {
			t.Errorf("%s: %v", cmd.Path, err)
		}
	})
}

// isKilled reports whether err is the exit of a process killed by SIGKILL.
func isKilled(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// dnsmasqLeases returns dnsmasq's lease file: one line per lease,
// "expiry MAC IP hostname client-id".
func dnsmasqLeases(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}
