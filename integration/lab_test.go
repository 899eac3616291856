//go:build integration

package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netns"
)

// The lab is a small LAN made of network namespaces, built once per test
// binary:
//
//	switch ns:  br0 ── p-host0 ─┬─ eth0 (host ns) the macvlan master,
//	                 │          │   198.51.100.2, 2001:db8:100::2, default routes via gw
//	                 ├─ p-host1 ─┴─ eth1 (host ns) a spare master (passthru, STATUS)
//	                 └─ p-gw ────── eth0 (gw ns)   198.51.100.1, 2001:db8:100::1
//
// Each test adds its container namespaces. Every namespace is named
// "<prefix>-<role>", the prefix being "mlt<pid>", so that parallel or
// crashed runs never collide and leftovers can be told apart.
const (
	subnet4 = "198.51.100.0/24"
	subnet6 = "2001:db8:100::/64"
	gw4     = "198.51.100.1"
	gw6     = "2001:db8:100::1"
	host4   = "198.51.100.2"
	host6   = "2001:db8:100::2"

	bridgeName = "br0"
	masterIf   = "eth0"    // in the host ns: default-route interface and master
	spareIf    = "eth1"    // in the host ns: a master of its own for passthru and STATUS
	gwIf       = "eth0"    // in the gw ns
	hostPort   = "p-host0" // switch port of the host's eth0
	sparePort  = "p-host1" // switch port of the host's eth1
	gwPort     = "p-gw"    // switch port of the gateway
	masterMTU  = 1500
)

// theLab is built by TestMain; tests only read it.
var theLab *lab

type lab struct {
	prefix   string
	binDir   string // bin/: maclan, maclan-ipam
	toolsDir string // .tools/bin: cnitool and the reference plugins

	sw, host, gw *netNS

	rootIDs []nsID // the machine's own network namespace (of pid 1, of this process)
	hostID  nsID   // the lab's host namespace

	seq      atomic.Int64
	reaper   *exec.Cmd
	reaperIn io.WriteCloser
}

// netNS is a named network namespace with an open handle and a netlink
// handle bound to it.
type netNS struct {
	name string
	path string
	ns   ns.NetNS
	nl   netlinksafe.Handle
}

// nsID identifies a namespace by the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

func nsIDOf(path string) (nsID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nsID{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return nsID{dev: st.Dev, ino: st.Ino}, nil
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration: needs root (network namespaces); skipping")
		return 0
	}
	binDir, err := filepath.Abs(envOr("MACLAN_BIN_DIR", "../bin"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	toolsDir, err := filepath.Abs(envOr("MACLAN_TOOLS_DIR", "../.tools/bin"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	for _, name := range []string{pluginType, ipamType, "cnitool", "tuning", "portmap"} {
		if !inDirs(name, binDir, toolsDir) {
			fmt.Fprintf(os.Stderr, "integration: %s not found in %s or %s (run make build tools)\n", name, binDir, toolsDir)
			return 1
		}
	}
	removeStaleLabs()

	l, err := newLab(fmt.Sprintf("mlt%d", os.Getpid()), binDir, toolsDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: build lab:", err)
		return 1
	}
	defer func() {
		if err := l.close(); err != nil {
			fmt.Fprintln(os.Stderr, "integration: tear down lab:", err)
		}
	}()
	theLab = l
	fmt.Fprintf(os.Stderr, "integration: lab %s, plugin %s, ipam %s\n", l.prefix, pluginType, ipamType)
	return m.Run()
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func inDirs(name string, dirs ...string) bool {
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, name)); err == nil && st.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// removeStaleLabs deletes the namespaces and libcni cache entries of earlier
// runs whose process is gone (a run killed before its reaper could act).
func removeStaleLabs() {
	stale := regexp.MustCompile(`^mlt([0-9]+)-`)
	dead := func(name string) bool {
		m := stale.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil {
			return false
		}
		_, err = os.Stat(fmt.Sprintf("/proc/%d", pid))
		return errors.Is(err, os.ErrNotExist)
	}
	entries, _ := os.ReadDir("/var/run/netns") // absent: nothing to remove
	for _, e := range entries {
		if dead(e.Name()) {
			_ = run("ip", "netns", "del", e.Name()) // best effort: the next run retries
		}
	}
	results, _ := os.ReadDir("/var/lib/cni/results") // cnitool's cache; absent: nothing to remove
	for _, e := range results {
		if dead(e.Name()) {
			_ = os.Remove(filepath.Join("/var/lib/cni/results", e.Name())) // best effort
		}
	}
}

func newLab(prefix, binDir, toolsDir string) (l *lab, err error) {
	l = &lab{prefix: prefix, binDir: binDir, toolsDir: toolsDir}
	if err := l.startReaper(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.close())
		}
	}()
	// The machine's namespace is the one this process started in; pid 1's
	// is compared too where this sandbox lets us read it.
	self, err := nsIDOf("/proc/self/ns/net")
	if err != nil {
		return l, err
	}
	l.rootIDs = append(l.rootIDs, self)
	if init, err := nsIDOf("/proc/1/ns/net"); err == nil {
		l.rootIDs = append(l.rootIDs, init)
	}
	if l.sw, err = l.addNetNS("sw"); err != nil {
		return l, err
	}
	if l.host, err = l.addNetNS("host"); err != nil {
		return l, err
	}
	if l.gw, err = l.addNetNS("gw"); err != nil {
		return l, err
	}
	if l.hostID, err = nsIDOf(l.host.path); err != nil {
		return l, err
	}
	if slices.Contains(l.rootIDs, l.hostID) {
		return l, fmt.Errorf("lab host namespace %s is the machine's own", l.host.path)
	}
	sw, host, gw := l.sw.name, l.host.name, l.gw.name

	steps := [][]string{
		{"-n", sw, "link", "add", bridgeName, "type", "bridge", "stp_state", "0", "mcast_snooping", "0"},
		{"-n", sw, "link", "set", bridgeName, "up"},
		// eth1 is made before eth0, so that a plugin that took the first
		// interface instead of the default-route one would pick the wrong one.
		{"-n", sw, "link", "add", sparePort, "type", "veth", "peer", "name", spareIf, "netns", host},
		{"-n", sw, "link", "add", hostPort, "type", "veth", "peer", "name", masterIf, "netns", host},
		{"-n", sw, "link", "add", gwPort, "type", "veth", "peer", "name", gwIf, "netns", gw},
	}
	for _, port := range []string{sparePort, hostPort, gwPort} {
		steps = append(steps, []string{"-n", sw, "link", "set", port, "master", bridgeName, "up"})
	}
	if err := ipSteps(steps); err != nil {
		return l, err
	}
	// The lab's own interfaces skip DAD so that their addresses and routes
	// are usable at once; container interfaces are left alone.
	sysctls := []struct {
		n        *netNS
		key, val string
	}{
		{l.host, "net/ipv6/conf/" + masterIf + "/accept_dad", "0"},
		{l.host, "net/ipv6/conf/" + spareIf + "/accept_dad", "0"},
		{l.gw, "net/ipv6/conf/" + gwIf + "/accept_dad", "0"},
		// The gateway is a router that learns neighbours from gratuitous
		// ARP and unsolicited NA even when it has no entry yet (RFC 9131;
		// Linux does so for NA only on a forwarding interface), so the
		// tests can see the plugin's announcements arrive.
		{l.gw, "net/ipv4/conf/" + gwIf + "/arp_accept", "1"},
		{l.gw, "net/ipv6/conf/all/forwarding", "1"},
		{l.gw, "net/ipv6/conf/" + gwIf + "/accept_untracked_na", "1"},
	}
	for _, s := range sysctls {
		if err := s.n.setSysctl(s.key, s.val); err != nil {
			return l, err
		}
	}
	steps = [][]string{
		{"-n", host, "link", "set", "lo", "up"},
		{"-n", host, "addr", "add", host4 + "/24", "dev", masterIf},
		{"-n", host, "addr", "add", host6 + "/64", "dev", masterIf, "nodad"},
		{"-n", host, "link", "set", masterIf, "mtu", strconv.Itoa(masterMTU), "up"},
		{"-n", host, "link", "set", spareIf, "mtu", strconv.Itoa(masterMTU), "up"},
		{"-n", host, "route", "add", "default", "via", gw4, "dev", masterIf},
		{"-n", host, "-6", "route", "add", "default", "via", gw6, "dev", masterIf},
		{"-n", gw, "link", "set", "lo", "up"},
		{"-n", gw, "addr", "add", gw4 + "/24", "dev", gwIf},
		{"-n", gw, "addr", "add", gw6 + "/64", "dev", gwIf, "nodad"},
		{"-n", gw, "link", "set", gwIf, "up"},
	}
	if err := ipSteps(steps); err != nil {
		return l, err
	}
	// The wiring works before any plugin runs. A first echo can be lost
	// while the new ports settle on a loaded machine: retried until
	// settleTimeout, as wantPing does.
	for _, dst := range []string{host4, host6} {
		if err := pingSettled(l.gw, dst); err != nil {
			return l, fmt.Errorf("lab self-check: %w", err)
		}
	}
	return l, nil
}

// startReaper starts a process, outside the test's process group, that
// deletes every namespace of this lab when the test binary goes away, by
// whatever way: its end of the pipe closes and `cat` returns. This is what
// tears the lab down after a panic or a -timeout, when no defer runs.
func (l *lab) startReaper() error {
	script := `cat >/dev/null
for n in $(ip netns list | cut -d' ' -f1); do
	case "$n" in ` + l.prefix + `-*) ip netns del "$n" ;; esac
done`
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("reaper: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start reaper: %w", err)
	}
	l.reaper, l.reaperIn = cmd, in
	return nil
}

// close deletes every namespace of the lab (the links in them go with them)
// and stops the reaper.
func (l *lab) close() error {
	var errs []error
	for _, n := range []*netNS{l.sw, l.host, l.gw} {
		if n != nil {
			n.close()
		}
	}
	entries, err := os.ReadDir("/var/run/netns")
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), l.prefix+"-") {
			errs = append(errs, run("ip", "netns", "del", e.Name()))
		}
	}
	if l.reaper != nil {
		_ = l.reaperIn.Close() // the reaper finds nothing left and exits
		errs = append(errs, l.reaper.Wait())
	}
	return errors.Join(errs...)
}

// addNetNS creates the named namespace "<prefix>-<role>" and opens it.
func (l *lab) addNetNS(role string) (*netNS, error) {
	name := l.prefix + "-" + role
	if err := run("ip", "netns", "add", name); err != nil {
		return nil, err
	}
	n := &netNS{name: name, path: filepath.Join("/var/run/netns", name)}
	var err error
	if n.ns, err = ns.GetNS(n.path); err != nil {
		_ = run("ip", "netns", "del", name) // undo; the open error is the one to report
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	if n.nl, err = netlinksafe.NewHandleAt(netns.NsHandle(n.ns.Fd())); err != nil {
		n.close()
		_ = run("ip", "netns", "del", name) // undo; the handle error is the one to report
		return nil, fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	return n, nil
}

func (n *netNS) close() {
	n.nl.Close()
	if n.ns != nil {
		_ = n.ns.Close() // a close error on an nsfs fd leaves nothing to undo
		n.ns = nil
	}
}

// newContainer creates a container namespace for t, deleted when t ends.
func newContainer(t *testing.T) *netNS {
	t.Helper()
	n, err := theLab.addNetNS(fmt.Sprintf("c%d", theLab.seq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := ipSteps([][]string{{"-n", n.name, "link", "set", "lo", "up"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeContainer(t, n) })
	return n
}

// removeContainer deletes a container namespace; a second call is a no-op.
func removeContainer(t *testing.T, n *netNS) {
	t.Helper()
	n.close()
	if _, err := os.Stat(n.path); errors.Is(err, os.ErrNotExist) {
		return
	}
	if err := run("ip", "netns", "del", n.name); err != nil {
		t.Errorf("delete container netns: %v", err)
	}
}

func (n *netNS) setSysctl(key, val string) error {
	return n.ns.Do(func(ns.NetNS) error {
		return os.WriteFile(filepath.Join("/proc/sys", key), []byte(val), 0o644)
	})
}

func (n *netNS) sysctl(key string) (string, error) {
	var val string
	err := n.ns.Do(func(ns.NetNS) error {
		b, err := os.ReadFile(filepath.Join("/proc/sys", key))
		val = strings.TrimSpace(string(b))
		return err
	})
	return val, err
}

// checkInHost is the safety guard run before every plugin execution: the
// calling thread must be in the lab's host namespace, never in the machine's
// own, where eth0 is the real NIC.
func (l *lab) checkInHost() error {
	cur, err := nsIDOf("/proc/thread-self/ns/net")
	if err != nil {
		return fmt.Errorf("safety guard: %w", err)
	}
	if slices.Contains(l.rootIDs, cur) {
		return errors.New("safety guard: refusing to run a plugin in the machine's own network namespace")
	}
	if cur != l.hostID {
		return fmt.Errorf("safety guard: refusing to run a plugin outside the lab host namespace %s", l.host.name)
	}
	return nil
}

// inHost runs fn on a thread in the lab's host namespace, after the guard.
// Processes started from fn (plugins, cnitool) inherit that namespace.
func (l *lab) inHost(fn func() error) error {
	return l.host.ns.Do(func(ns.NetNS) error {
		if err := l.checkInHost(); err != nil {
			return err
		}
		return fn()
	})
}

// run runs a command and reports its output on failure.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func ipSteps(steps [][]string) error {
	for _, s := range steps {
		if err := run("ip", s...); err != nil {
			return err
		}
	}
	return nil
}

func (l *lab) ip(t *testing.T, args ...string) {
	t.Helper()
	if err := run("ip", args...); err != nil {
		t.Fatal(err)
	}
}
