//go:build integration

package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
)

// Helpers of the reliability tests (issue 8): soak, crash injection, full
// disk, lock holder, hostile input, master faults. The long ones (soak and
// crash) run only with MACLAN_RELIABILITY=1 (make reliability); the others
// run in make test too. Figures are logged as "figure: ..." lines, and
// appended to the file named by MACLAN_RELIABILITY_OUT when it is set, for
// docs/reliability.md. Tests never compare a duration against a threshold.

// needLong skips t unless the long reliability tests were asked for.
func needLong(t *testing.T) {
	t.Helper()
	if os.Getenv("MACLAN_RELIABILITY") != "1" {
		t.Skip("long reliability test: runs with MACLAN_RELIABILITY=1 (make reliability)")
	}
}

var figureMu sync.Mutex

// figure logs one measured figure and appends it to MACLAN_RELIABILITY_OUT.
func figure(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf("%s: %s", t.Name(), fmt.Sprintf(format, args...))
	t.Log("figure: " + line)
	out := os.Getenv("MACLAN_RELIABILITY_OUT")
	if out == "" {
		return
	}
	figureMu.Lock()
	defer figureMu.Unlock()
	f, err := os.OpenFile(out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err == nil {
		_, err = fmt.Fprintln(f, line)
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		t.Errorf("write figure to %s: %v", out, err)
	}
}

func envInt(t *testing.T, key string, def int) int {
	t.Helper()
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	i, err := strconv.Atoi(v)
	if err != nil || i <= 0 {
		t.Fatalf("%s=%q: want a positive integer", key, v)
	}
	return i
}

// durStats summarises durations: count, median, 99th percentile, maximum.
type durStats struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *durStats) add(d time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
}

func (s *durStats) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.d) == 0 {
		return "n=0"
	}
	d := slices.Clone(s.d)
	slices.Sort(d)
	q := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	ms := func(x time.Duration) string { return fmt.Sprintf("%.1f ms", float64(x)/float64(time.Millisecond)) }
	return fmt.Sprintf("n=%d median %s p99 %s max %s", len(d), ms(q(0.5)), ms(q(0.99)), ms(d[len(d)-1]))
}

// rawCall is one execution of a plugin binary as a runtime does it
// (fork/exec, CNI_* environment, configuration on stdin), from the lab's host
// namespace, in a process group of its own so that its children (the IPAM)
// can be waited for or killed too.
type rawCall struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	start          time.Time
	dur            time.Duration
}

// rawCall prepares plugin (found in the network's CNI_PATH) for command.
// ctr may be nil (STATUS, GC); extra adds environment variables.
func (n *testNet) rawCall(plugin, command, containerID string, ctr *netNS, ifName string, stdin []byte, extra ...string) *rawCall {
	n.t.Helper()
	path, err := n.guardedExec().FindInPath(plugin, n.path())
	if err != nil {
		n.t.Fatal(err)
	}
	rc := &rawCall{cmd: exec.Command(path)}
	netnsPath := ""
	if ctr != nil {
		netnsPath = ctr.path
	}
	rc.cmd.Env = append([]string{
		"CNI_COMMAND=" + command,
		"CNI_CONTAINERID=" + containerID,
		"CNI_NETNS=" + netnsPath,
		"CNI_IFNAME=" + ifName,
		"CNI_PATH=" + strings.Join(n.path(), string(os.PathListSeparator)),
		"PATH=" + os.Getenv("PATH"),
	}, extra...)
	rc.cmd.Stdin = bytes.NewReader(stdin)
	rc.cmd.Stdout, rc.cmd.Stderr = &rc.stdout, &rc.stderr
	rc.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return rc
}

// startGuarded starts the call from the lab's host namespace, after the
// safety guard.
func (rc *rawCall) startGuarded() error {
	return theLab.inHost(func() error {
		rc.start = time.Now()
		return rc.cmd.Start()
	})
}

// wait waits for the process; a failure carries the CNI error the plugin
// printed, if any, so that cniCode works on it.
func (rc *rawCall) wait() error {
	err := rc.cmd.Wait()
	rc.dur = time.Since(rc.start)
	if err == nil {
		return nil
	}
	var te types.Error
	if json.Unmarshal(rc.stdout.Bytes(), &te) == nil && te.Code != 0 {
		return fmt.Errorf("%s %s: %w (stderr: %s)", filepath.Base(rc.cmd.Path), envValueOf(rc.cmd.Env, "CNI_COMMAND"),
			&te, bytes.TrimSpace(rc.stderr.Bytes()))
	}
	return fmt.Errorf("%s %s: %w: %s %s", filepath.Base(rc.cmd.Path), envValueOf(rc.cmd.Env, "CNI_COMMAND"),
		err, bytes.TrimSpace(rc.stdout.Bytes()), bytes.TrimSpace(rc.stderr.Bytes()))
}

func (rc *rawCall) run() error {
	if err := rc.startGuarded(); err != nil {
		return err
	}
	return rc.wait()
}

// panicked reports whether the Go runtime printed a panic or a fatal error.
func (rc *rawCall) panicked() bool {
	s := rc.stderr.String()
	return strings.Contains(s, "panic:") || strings.Contains(s, "fatal error:") || strings.Contains(s, "goroutine ")
}

// waitGroupGone polls until no process of the call's process group is left
// (an IPAM child orphaned by a killed maclan finishes on its own).
func (rc *rawCall) waitGroupGone(t *testing.T) {
	t.Helper()
	pgid := rc.cmd.Process.Pid
	deadline := time.Now().Add(pluginTimeout)
	for syscall.Kill(-pgid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("process group %d still alive after %s", pgid, pluginTimeout)
		}
		time.Sleep(2 * time.Millisecond) // polling for the group to end
	}
}

func envValueOf(env []string, key string) string {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}

// ipamCLI runs the operator tool (maclan-ipam without CNI_COMMAND) from the
// lab host namespace and returns its exit code and output. It is
// maclan-ipam's whatever IPAM the tests run with (MACLAN_TEST_IPAM).
func ipamCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(theLab.binDir, "maclan-ipam"), args...)
	cmd.Env = cleanEnv()
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := theLab.inHost(cmd.Run)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, o.String(), e.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), o.String(), e.String()
	default:
		t.Fatalf("maclan-ipam %v: %v", args, err)
		return 0, "", ""
	}
}

// wantFsckClean runs fsck on the network's store and fails t unless it finds
// nothing wrong.
func (n *testNet) wantFsckClean() {
	n.t.Helper()
	code, out, errOut := ipamCLI(n.t, "fsck", "--data-dir", n.dataDir, "--network", n.name)
	if code != 0 {
		n.t.Errorf("fsck: exit %d, want 0: %s %s", code, out, errOut)
	}
}

// lsLease is one lease as `maclan-ipam ls -o json` shows it.
type lsLease struct {
	IP          string `json:"ip"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// leasesByOwner reads the network's leases through `maclan-ipam ls` and
// maps each container ID to its sorted addresses.
func (n *testNet) leasesByOwner() map[string][]string {
	n.t.Helper()
	code, out, errOut := ipamCLI(n.t, "ls", "--data-dir", n.dataDir, "--network", n.name, "-o", "json")
	if code != 0 {
		n.t.Fatalf("ls: exit %d: %s %s", code, out, errOut)
	}
	var ls []lsLease
	if strings.TrimSpace(out) != "" {
		if err := json.Unmarshal([]byte(out), &ls); err != nil {
			n.t.Fatalf("ls output %q: %v", out, err)
		}
	}
	owners := map[string][]string{}
	for _, l := range ls {
		owners[l.ContainerID] = append(owners[l.ContainerID], l.IP)
	}
	for _, ips := range owners {
		sort.Strings(ips)
	}
	return owners
}

// extraMaster adds a master of a test's own to the lab: a veth whose switch
// end (port) is on the bridge and whose other end (name) is up in the host
// namespace. It is removed when t ends.
func extraMaster(t *testing.T, name, port string) {
	t.Helper()
	sw, host := theLab.sw.name, theLab.host.name
	theLab.ip(t, "-n", sw, "link", "add", port, "type", "veth", "peer", "name", name, "netns", host)
	t.Cleanup(func() {
		if _, err := theLab.sw.nl.LinkByName(port); err == nil {
			if err := run("ip", "-n", sw, "link", "del", port); err != nil {
				t.Errorf("remove master %s: %v", name, err)
			}
		}
	})
	theLab.ip(t, "-n", sw, "link", "set", port, "master", bridgeName, "up")
	theLab.ip(t, "-n", host, "link", "set", name, "mtu", strconv.Itoa(masterMTU), "up")
}

// hostMacvlans lists the macvlan links in the lab host namespace (the lab
// itself has none; a plugin that leaked one would leave it here).
func hostMacvlans(t *testing.T) []string {
	t.Helper()
	links, err := theLab.host.nl.LinkList()
	if err != nil {
		t.Fatalf("list links in %s: %v", theLab.host.name, err)
	}
	var names []string
	for _, l := range links {
		if _, ok := l.(*netlink.Macvlan); ok {
			names = append(names, l.Attrs().Name)
		}
	}
	return names
}

// treeFiles lists every path under root, relative to it.
func treeFiles(t *testing.T, root string) []string {
	t.Helper()
	var paths []string
	err := filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		paths = append(paths, rel)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

// netConfBytes is the single-plugin net conf a runtime gives the main
// plugin for the list entry plugin (without its capabilities).
func netConfBytes(t *testing.T, plugin map[string]any, name string) []byte {
	t.Helper()
	c := make(map[string]any, len(plugin)+2)
	for k, v := range plugin {
		c[k] = v
	}
	c["cniVersion"], c["name"] = "1.1.0", name
	delete(c, "capabilities")
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
