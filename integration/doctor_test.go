//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/disk"
)

// doctorReport is maclan doctor's -o json.
type doctorReport struct {
	Checks []struct {
		Network, Check, Status, Saw, Fix string
	}
	Failed  int
	Seconds float64
}

// line returns the first check of that name whose text mentions every
// word, as the text output prints it.
func (r doctorReport) line(check string, mentions ...string) (string, bool) {
	for _, c := range r.Checks {
		if c.Check != check {
			continue
		}
		s := fmt.Sprintf("%-4s  %-11s  %s", c.Status, c.Check, c.Saw)
		if c.Fix != "" {
			s += "  fix: " + c.Fix
		}
		all := true
		for _, m := range mentions {
			all = all && strings.Contains(s, m)
		}
		if all {
			return s, true
		}
	}
	return "", false
}

// want checks that the report has a line of check with status and the
// words, and logs it (the closing note quotes these lines).
func (r doctorReport) want(t *testing.T, check, status string, mentions ...string) {
	t.Helper()
	s, found := r.line(check, append([]string{status + " "}, mentions...)...)
	if !found {
		t.Errorf("no %s line %q mentioning %q; report:\n%s", status, check, mentions, r.text())
		return
	}
	t.Logf("doctor: %s", s)
}

func (r doctorReport) text() string {
	var b strings.Builder
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "  %-4s %-11s %s  fix: %s\n", c.Status, c.Check, c.Saw, c.Fix)
	}
	return b.String()
}

// writeConf writes the network's list into a configuration directory of
// its own and returns the directory.
func writeConf(t *testing.T, n *testNet, conf map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	b, err := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": n.name, "plugins": []any{conf}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "10-"+n.name+".conflist"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// doctorCmd is maclan doctor run from the lab's host namespace.
func doctorCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(theLab.binDir, pluginType), append([]string{"doctor"}, args...)...)
	cmd.Env = cleanEnv()
	return cmd
}

// runDoctor runs maclan doctor -o json in the lab's host namespace and
// returns its report and exit status.
func runDoctor(t *testing.T, args ...string) (doctorReport, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := -1
	err := theLab.inHost(func() error {
		cmd := doctorCmd(append(args, "-o", "json")...)
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code, err = ee.ExitCode(), nil
		} else if err == nil {
			code = 0
		}
		return err
	})
	if err != nil {
		t.Fatalf("maclan doctor: %v: %s", err, errb.String())
	}
	var rep doctorReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("maclan doctor -o json: %v: %s %s", err, out.String(), errb.String())
	}
	t.Logf("maclan doctor: exit %d in %.2fs", code, rep.Seconds)
	return rep, code
}

// lockHostPort makes the switch port of the host's master filter unknown
// MACs, as a hypervisor without forged transmits does: a locked port with
// learning off lets in only frames from the MACs of its static FDB
// entries, and there is one, for the master's own MAC.
func lockHostPort(t *testing.T) {
	t.Helper()
	mac := theLab.host.link(t, masterIf).Attrs().HardwareAddr.String()
	sw := theLab.sw.name
	undo := func() {
		_ = run("ip", "netns", "exec", sw, "bridge", "fdb", "del", mac, "dev", hostPort, "master", "static") // absent after a failed lock
		if err := run("ip", "netns", "exec", sw, "bridge", "link", "set", "dev", hostPort, "locked", "off", "learning", "on"); err != nil {
			t.Errorf("unlock %s: %v", hostPort, err)
		}
	}
	t.Cleanup(undo)
	for _, args := range [][]string{
		{"bridge", "fdb", "replace", mac, "dev", hostPort, "master", "static"},
		{"bridge", "link", "set", "dev", hostPort, "locked", "on", "learning", "off"},
	} {
		if err := run("ip", append([]string{"netns", "exec", sw}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDoctorMACFilter: behind a port that drops frames from MACs it was
// not told about, the gateway answers the master and not the probe, and
// the doctor says so; on the same lab with the port open, it says OK.
func TestDoctorMACFilter(t *testing.T) {
	n := newNet(t)
	dir := writeConf(t, n, n.mainConf())
	t.Run("open", func(t *testing.T) {
		rep, code := runDoctor(t, "--conf-dir", dir)
		rep.want(t, "gateway", "OK", gw4, "ARP")
		rep.want(t, "gateway", "OK", gw6, "NDP")
		rep.want(t, "mac-filter", "OK", gw4, "fresh")
		rep.want(t, "mac-filter", "OK", gw6, "fresh")
		if code != 0 || rep.Failed != 0 {
			t.Errorf("exit %d with %d failed, want 0:\n%s", code, rep.Failed, rep.text())
		}
	})
	t.Run("locked", func(t *testing.T) {
		lockHostPort(t)
		rep, code := runDoctor(t, "--conf-dir", dir)
		rep.want(t, "gateway", "OK", gw4)
		rep.want(t, "mac-filter", "FAIL", gw4, "answered ARP from the master's MAC but not from a fresh one", "forged transmits", "ipvlan")
		rep.want(t, "mac-filter", "FAIL", gw6, "NDP")
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		var out bytes.Buffer
		err := theLab.inHost(func() error {
			cmd := doctorCmd("--conf-dir", dir)
			cmd.Stdout = &out
			_ = cmd.Run() // exit status 1: checked above
			return nil
		})
		want := "FAIL  mac-filter   eth0: the gateway " + gw4 + " answered ARP from the master's MAC but not from a fresh one"
		if err != nil || !strings.Contains(out.String(), want) {
			t.Errorf("text output: got %v\n%s\nwant a line with %q", err, out.String(), want)
		}
		t.Logf("text output:\n%s", out.String())
	})
	t.Run("master and gateway by hand", func(t *testing.T) {
		lockHostPort(t)
		rep, code := runDoctor(t, "--master", masterIf, "--gateway", gw4)
		rep.want(t, "mac-filter", "FAIL", gw4)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
	})
}

// TestDoctorFaults: each fault of the lab gives its own line.
func TestDoctorFaults(t *testing.T) {
	t.Run("master down", func(t *testing.T) {
		theLab.ip(t, "-n", theLab.host.name, "link", "set", spareIf, "down")
		t.Cleanup(func() { theLab.ip(t, "-n", theLab.host.name, "link", "set", spareIf, "up") })
		n := newNet(t)
		conf := n.mainConf()
		conf["master"] = spareIf
		rep, code := runDoctor(t, "--conf-dir", writeConf(t, n, conf))
		rep.want(t, "master", "FAIL", spareIf, "is down", "ip link set "+spareIf+" up")
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
	})
	t.Run("mtu above the master's", func(t *testing.T) {
		n := newNet(t)
		conf := n.mainConf()
		conf["mtu"] = 9000
		rep, _ := runDoctor(t, "--conf-dir", writeConf(t, n, conf))
		rep.want(t, "mtu", "FAIL", "9000", "1500")
	})
	t.Run("silent gateway", func(t *testing.T) {
		n := newNet(t)
		conf := n.mainConf()
		conf["ipam"] = map[string]any{"type": ipamType, "dataDir": n.dataDir,
			"ranges": []any{[]any{map[string]any{"subnet": subnet4, "rangeStart": rangeStart4, "rangeEnd": rangeEnd4, "gateway": "198.51.100.254"}}}}
		rep, _ := runDoctor(t, "--conf-dir", writeConf(t, n, conf))
		rep.want(t, "gateway", "FAIL", "198.51.100.254", "did not answer")
		rep.want(t, "mac-filter", "SKIP", "198.51.100.254")
	})
	t.Run("range over the host's address", func(t *testing.T) {
		n := newNet(t)
		conf := n.mainConf()
		conf["ipam"] = map[string]any{"type": ipamType, "dataDir": n.dataDir,
			"ranges": []any{[]any{map[string]any{"subnet": subnet4, "rangeStart": "198.51.100.2", "rangeEnd": "198.51.100.50", "gateway": gw4}}}}
		rep, _ := runDoctor(t, "--conf-dir", writeConf(t, n, conf))
		rep.want(t, "overlap", "FAIL", host4, masterIf, "ipam.exclude")
	})
	t.Run("pool at 95%", func(t *testing.T) {
		n := newNet(t)
		conf := n.mainConf()
		conf["ipam"] = map[string]any{"type": ipamType, "dataDir": n.dataDir,
			"ranges": []any{[]any{map[string]any{"subnet": subnet4, "rangeStart": "198.51.100.100", "rangeEnd": "198.51.100.119", "gateway": gw4}}}}
		reserve(t, n, "198.51.100.100", 19)
		rep, code := runDoctor(t, "--conf-dir", writeConf(t, n, conf))
		rep.want(t, "pool", "WARN", "19 of 20", "95%")
		rep.want(t, "store", "OK", "fsck-clean")
		if code != 0 {
			t.Errorf("exit %d, want 0 (a warning is no failure):\n%s", code, rep.text())
		}
	})
	t.Run("corrupt lease", func(t *testing.T) {
		n := newNet(t)
		reserve(t, n, rangeStart4, 2)
		lease := filepath.Join(n.dataDir, n.name, "leases", rangeStart4)
		if err := os.WriteFile(lease, []byte("{not a lease"), 0o600); err != nil {
			t.Fatal(err)
		}
		rep, code := runDoctor(t, "--conf-dir", writeConf(t, n, n.mainConf()))
		rep.want(t, "store", "FAIL", "corrupt-lease", rangeStart4, "--repair")
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		b, err := os.ReadFile(lease)
		if err != nil || string(b) != "{not a lease" {
			t.Errorf("the doctor changed the lease file: %q, %v", b, err)
		}
	})
}

// reserve leases count addresses from first in the network's disk store.
func reserve(t *testing.T, n *testNet, first string, count int) {
	t.Helper()
	if ipamType != "maclan-ipam" {
		t.Skip("the store is maclan-ipam's")
	}
	st, err := disk.New(n.dataDir, n.name, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ip := netip.MustParseAddr(first)
	ctx := t.Context()
	err = store.WithLock(ctx, st, func() error {
		for i := range count {
			if err := st.Reserve(ctx, store.Lease{IP: ip, ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0", Created: time.Now()}); err != nil {
				return err
			}
			ip = ip.Next()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDoctorHealthy: a working network with a host shim and one container:
// the host reaches the container, and the timings of the debug log are
// summarised.
func TestDoctorHealthy(t *testing.T) {
	n, _ := newShimNet(t, "1.0.0")
	conf := n.mainConf()
	conf["hostShim"] = map[string]any{"enabled": true}
	conf["logFile"] = filepath.Join(t.TempDir(), "maclan.log")
	conf["logLevel"] = "debug"
	c := newContainer(t)
	a := n.attach(n.list("1.0.0", conf), c, "eth0")
	a.mustAdd()
	c2 := newContainer(t)
	b := n.attach(n.list("1.0.0", conf), c2, "eth0")
	b.mustAdd()
	if err := b.del(); err != nil {
		t.Fatal(err)
	}
	rep, code := runDoctor(t, "--conf-dir", writeConf(t, n, conf))
	rep.want(t, "host-reach", "OK", "reaches the container address")
	rep.want(t, "timings", "OK", "ADD: last 2 calls", "slowest phase")
	rep.want(t, "timings", "OK", "DEL: last 1 calls")
	for _, c := range rep.Checks {
		t.Logf("doctor: %-4s  %-11s  %s", c.Status, c.Check, c.Saw)
	}
	if code != 0 {
		t.Errorf("exit %d, want 0:\n%s", code, rep.text())
	}
}

// TestDoctorProbeLeavesNothing: the probe's namespace and link go with the
// doctor, after a normal run and when it is SIGKILLed half-way through
// the probe.
func TestDoctorProbeLeavesNothing(t *testing.T) {
	n := newNet(t)
	dir := writeConf(t, n, n.mainConf())
	before := labState(t)
	runDoctor(t, "--conf-dir", dir)
	if after := labState(t); after != before {
		t.Errorf("after a run: got %s, want %s", after, before)
	}

	// The doctor holds its probe (a test hook) until its stdin closes.
	var cmd *exec.Cmd
	var held *bufio.Reader
	err := theLab.inHost(func() error {
		cmd = doctorCmd("--conf-dir", dir)
		cmd.Env = append(cmd.Env, "MACLAN_DOCTOR_HOLD_PROBE=1")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			return err
		}
		if _, err := cmd.StdinPipe(); err != nil { // kept open: the probe holds
			return err
		}
		held = bufio.NewReader(stderr)
		return cmd.Start()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }) // a no-op once killed below
	line, err := held.ReadString('\n')
	if err != nil || !strings.Contains(line, "held") {
		t.Fatalf("doctor did not hold its probe: %q, %v", line, err)
	}
	probeNS, links := probeNamespace(t, cmd.Process.Pid)
	t.Logf("probe namespace %v holds %v", probeNS, links)
	if len(links) != 2 {
		t.Errorf("probe namespace links: got %v, want lo and the probe macvlan", links)
	}
	if during := labState(t); during != before {
		t.Errorf("during the probe the host namespace changed: got %s, want %s", during, before)
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait() // killed: the error says so
	if holders := nsHolders(probeNS); len(holders) > 0 {
		t.Errorf("the probe namespace is still held by %v", holders)
	}
	if after := labState(t); after != before {
		t.Errorf("after SIGKILL: got %s, want %s", after, before)
	}
	n.wantNoLeases()
}

// labState sums up what a probe could leave behind in the lab and on the
// machine: the host namespace's links, the named namespaces.
func labState(t *testing.T) string {
	t.Helper()
	names := theLab.host.linkNames(t)
	var named []string
	entries, _ := os.ReadDir("/var/run/netns") // absent: none
	for _, e := range entries {
		named = append(named, e.Name())
	}
	slices.Sort(named)
	return fmt.Sprintf("host links %v, named namespaces %v", names, named)
}

// probeNamespace finds the network namespace of a thread of pid that is
// neither the lab host's nor the machine's, and lists its links.
func probeNamespace(t *testing.T, pid int) (nsID, []string) {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/ns/net", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range tasks {
		id, err := nsIDOf(p)
		if err != nil || id == theLab.hostID || slices.Contains(theLab.rootIDs, id) {
			continue
		}
		var names []string
		err = ns.WithNetNSPath(p, func(ns.NetNS) error {
			h, err := netlinksafe.NewHandle()
			if err != nil {
				return err
			}
			defer h.Close()
			links, err := h.LinkList()
			for _, l := range links {
				if _, isMacvlan := l.(*netlink.Macvlan); isMacvlan || l.Attrs().Name == "lo" {
					names = append(names, l.Attrs().Name+"/"+l.Type())
				}
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return id, names
	}
	t.Fatal("no thread of the doctor is in a namespace of its own")
	return nsID{}, nil
}

// nsHolders lists what still refers to the namespace id: a thread of any
// process, an open descriptor, a bind mount.
func nsHolders(id nsID) []string {
	var held []string
	for _, pattern := range []string{"/proc/[0-9]*/task/[0-9]*/ns/net", "/proc/[0-9]*/fd/*"} {
		paths, _ := filepath.Glob(pattern) // a malformed pattern is a bug caught by the first run
		for _, p := range paths {
			if got, err := nsIDOf(p); err == nil && got == id {
				held = append(held, p)
			}
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo") // unreadable: no mounts to look at
	if bytes.Contains(mounts, []byte(fmt.Sprintf("net:[%d]", id.ino))) {
		held = append(held, "a bind mount")
	}
	return held
}
