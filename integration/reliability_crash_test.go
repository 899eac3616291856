//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

// TestReliabilityCrash kills MACLAN_CRASH_ADDS (200) ADDs with SIGKILL at a
// random instant, half of them in maclan and half in the maclan-ipam it
// delegates to (a wrapper first in CNI_PATH records the IPAM's pid, then
// execs the real binary, keeping the pid). The instant is uniform over the
// duration of an unharmed call, measured first. After each kill the
// "runtime" flips a coin: the container survives (the runtime sends DEL,
// then ADD again, which must succeed) or dies with the runtime (no DEL; its
// namespace is removed). At the end fsck --repair and a GC listing the
// survivors must leave exactly the survivors' leases, fsck must find no
// corrupt file, and no namespace may hold an interface it should not.
func TestReliabilityCrash(t *testing.T) {
	needLong(t)
	total := envInt(t, "MACLAN_CRASH_ADDS", 200)
	parallel := envInt(t, "MACLAN_CRASH_PARALLEL", 4)

	n := newNet(t)
	wrapDir := t.TempDir()
	pidDir := filepath.Join(wrapDir, "pids")
	if err := os.Mkdir(pidDir, 0o700); err != nil {
		t.Fatal(err)
	}
	wrapper := fmt.Sprintf(`#!/bin/sh
if [ "$CNI_COMMAND" = ADD ]; then
	echo $$ >%[1]q/.tmp-"$CNI_CONTAINERID" && mv %[1]q/.tmp-"$CNI_CONTAINERID" %[1]q/"$CNI_CONTAINERID"
fi
exec %[2]q "$@"
`, pidDir, filepath.Join(theLab.binDir, ipamType))
	if err := os.WriteFile(filepath.Join(wrapDir, ipamType), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	n.extraDir = wrapDir
	n.cni = n.newCNIConfig(t.TempDir())

	conf := n.mainConf()
	ipam := conf["ipam"].(map[string]any)
	// Room for the survivors and the leaked leases of the dead at once.
	ipam["ranges"] = []any{
		[]any{map[string]any{"subnet": subnet4, "rangeStart": "198.51.100.3", "rangeEnd": "198.51.100.254", "gateway": gw4}},
		[]any{map[string]any{"subnet": subnet6, "rangeStart": rangeStart6, "rangeEnd": "2001:db8:100::4ff", "gateway": gw6}},
	}
	list := n.list("1.1.0", conf)
	stdinConf := netConfBytes(t, conf, n.name)
	stdin := func(string) []byte { return stdinConf }

	// Calibrate: how long an unharmed ADD of each takes here.
	var mainDur, ipamDur durStats
	for i := range 5 {
		c := newContainer(t)
		id := fmt.Sprintf("%s-cal%d", theLab.prefix, i)
		rc := n.rawCall(pluginType, "ADD", id, c, "eth0", stdin(id))
		if err := rc.run(); err != nil {
			t.Fatalf("calibration ADD: %v", err)
		}
		mainDur.add(rc.dur)
		if err := n.rawCall(pluginType, "DEL", id, c, "eth0", stdin(id)).run(); err != nil {
			t.Fatalf("calibration DEL: %v", err)
		}
		rc = n.rawCall(ipamType, "ADD", id, c, "eth0", stdin(id))
		if err := rc.run(); err != nil {
			t.Fatalf("calibration IPAM ADD: %v", err)
		}
		ipamDur.add(rc.dur)
		if err := n.rawCall(ipamType, "DEL", id, c, "eth0", stdin(id)).run(); err != nil {
			t.Fatalf("calibration IPAM DEL: %v", err)
		}
	}
	mainMax, ipamMax := maxDur(&mainDur), maxDur(&ipamDur)
	figure(t, "unharmed maclan ADD %s; unharmed maclan-ipam ADD %s", &mainDur, &ipamDur)

	type outcome struct {
		id         string
		target     string // "maclan" or "maclan-ipam"
		delay      time.Duration
		killed     bool // the signal reached a running process
		exitOK     bool // the ADD finished before the kill
		link       bool // eth0 in the container right after the kill
		strayLinks []string
		survivor   bool
		ips        []string // the survivor's addresses
		ctr        *netNS
	}
	outcomes := make([]*outcome, total)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	start := time.Now()
	for i := range total {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			o := &outcome{id: fmt.Sprintf("%s-crash%d", theLab.prefix, i), target: pluginType, survivor: rand.IntN(2) == 0}
			mu.Lock()
			o.ctr = newContainer(t)
			mu.Unlock()
			outcomes[i] = o
			if i%2 == 1 {
				o.target = ipamType
			}
			rc := n.rawCall(pluginType, "ADD", o.id, o.ctr, "eth0", stdin(o.id))
			if err := rc.startGuarded(); err != nil {
				t.Errorf("%s: start ADD: %v", o.id, err)
				return
			}
			victim := rc.cmd.Process.Pid
			if o.target == ipamType {
				o.delay = time.Duration(rand.Int64N(int64(ipamMax)))
				victim = waitPidFile(t, filepath.Join(pidDir, o.id), rc)
			} else {
				o.delay = time.Duration(rand.Int64N(int64(mainMax)))
			}
			if victim > 0 {
				time.Sleep(o.delay) // the injected fault's random instant, not a synchronisation
				o.killed = syscall.Kill(victim, syscall.SIGKILL) == nil
			}
			err := rc.wait()
			o.exitOK = err == nil
			rc.waitGroupGone(t)
			if rc.panicked() {
				t.Errorf("%s: a plugin panicked: %s", o.id, rc.stderr.String())
			}
			names := soakLinkNames(o.ctr)
			o.link = slices.Contains(names, "eth0")
			for _, name := range names {
				if name != "lo" && name != "eth0" {
					o.strayLinks = append(o.strayLinks, name)
				}
			}
			if !o.survivor {
				mu.Lock()
				removeContainer(t, o.ctr)
				mu.Unlock()
				return
			}
			if !o.exitOK {
				// The runtime cleans up after the failed ADD, then retries.
				if err := n.rawCall(pluginType, "DEL", o.id, o.ctr, "eth0", stdin(o.id)).run(); err != nil {
					t.Errorf("%s: DEL after the killed ADD: %v", o.id, err)
				}
				retry := n.rawCall(pluginType, "ADD", o.id, o.ctr, "eth0", stdin(o.id))
				if err := retry.run(); err != nil {
					t.Errorf("%s: ADD after the killed ADD and DEL: %v", o.id, err)
					return
				}
				rc = retry
			}
			o.ips = stdoutIPs(t, rc.stdout.Bytes())
		}()
	}
	wg.Wait()
	wall := time.Since(start)

	// What the kills left behind, before any repair.
	counts := map[string]int{}
	var survivors []types.GCAttachment
	wantLeases := map[string][]string{}
	var stray []string
	for _, o := range outcomes {
		if o == nil {
			continue
		}
		counts["target "+o.target]++
		switch {
		case o.exitOK:
			counts["finished before the kill of "+o.target]++
		case o.killed:
			counts["killed "+o.target]++
		}
		if o.link && !o.exitOK {
			counts["killed ADD left eth0 in the container"]++
		}
		if len(o.strayLinks) > 0 {
			counts["killed ADD left a temporary link in the container"]++
			if o.survivor {
				stray = append(stray, fmt.Sprintf("%s: %v", o.id, o.strayLinks))
			}
		}
		if o.survivor {
			counts["survivors"]++
			survivors = append(survivors, types.GCAttachment{ContainerID: o.id, IfName: "eth0"})
			wantLeases[o.id] = o.ips
		}
	}
	before := n.leasesByOwner()
	leaked := 0
	for id, ips := range before {
		if _, ok := wantLeases[id]; !ok {
			leaked += len(ips)
		}
	}
	fsckCode, fsckOut, _ := ipamCLI(t, "fsck", "--data-dir", n.dataDir, "--network", n.name)
	problems := fsckProblems(fsckOut)
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, counts[k]))
	}
	figure(t, "%d killed ADDs (%d at a time) in %.1f s: %s", total, parallel, wall.Seconds(), strings.Join(parts, ", "))
	// The kill instants are spread over an unharmed ADD's length, so most
	// kills land in a running process; if most ADDs finished first, the
	// test would be checking little and says so.
	if landed := counts["killed maclan"] + counts["killed maclan-ipam"]; landed < total/2 {
		t.Errorf("only %d of %d kills reached a running ADD; the instants are too late to test crash safety", landed, total)
	}
	figure(t, "before repair: %d leases of dead containers, fsck exit %d with %d problems: %v", leaked, fsckCode, len(problems), problems)
	for _, p := range problems {
		if strings.Contains(p, "corrupt") || strings.Contains(p, "damaged") {
			t.Errorf("fsck after the kills found a damaged record: %s", p)
		}
	}

	// Repair, then GC with the real set of live attachments.
	if code, out, errOut := ipamCLI(t, "fsck", "--data-dir", n.dataDir, "--network", n.name, "--repair"); code != 0 {
		t.Errorf("fsck --repair: exit %d: %s %s", code, out, errOut)
	}
	gcStart := time.Now()
	err := theLab.inHost(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
		defer cancel()
		return n.newCNIConfig(t.TempDir()).GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: survivors})
	})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	figure(t, "GC with %d live attachments took %.0f ms", len(survivors), float64(time.Since(gcStart))/float64(time.Millisecond))

	after := n.leasesByOwner()
	for id, ips := range wantLeases {
		if !slices.Equal(after[id], ips) {
			t.Errorf("survivor %s: leases %v, want its addresses %v", id, after[id], ips)
		}
	}
	for id, ips := range after {
		if _, ok := wantLeases[id]; !ok {
			t.Errorf("after GC, %v still leased to %s, which is gone", ips, id)
		}
	}
	n.wantFsckClean()
	if q, _ := os.ReadDir(filepath.Join(n.dataDir, n.name, "quarantine")); len(q) != 0 {
		t.Errorf("fsck --repair quarantined %d records: a kill damaged a file", len(q))
	}
	var strayAfter []string // temporary links still there after the runtime's DEL and retry
	for _, o := range outcomes {
		if o != nil && o.survivor && o.ips != nil {
			var names []string
			for _, name := range soakLinkNames(o.ctr) {
				if isTempLink(name) {
					strayAfter = append(strayAfter, fmt.Sprintf("%s: %s", o.id, name))
					continue
				}
				names = append(names, name)
			}
			slices.Sort(names)
			if !slices.Equal(names, []string{"eth0", "lo"}) {
				t.Errorf("survivor %s: links %v, want lo and eth0", o.id, names)
			}
		}
	}
	figure(t, "surviving containers left with a temporary link by the killed ADD, before the runtime's DEL: %d %v", len(stray), stray)
	t.Run("no temporary link survives a killed ADD", func(t *testing.T) {
		// The runtime's DEL after the failed ADD removes it.
		if len(strayAfter) > 0 {
			t.Errorf("temporary links left in surviving containers after DEL and the retried ADD: %v", strayAfter)
		}
	})
	if mv := hostMacvlans(t); len(mv) != 0 {
		t.Errorf("macvlans in the host namespace: %v", mv)
	}

	// The survivors go away normally; nothing is left.
	for _, o := range outcomes {
		if o != nil && o.survivor {
			if err := n.rawCall(pluginType, "DEL", o.id, o.ctr, "eth0", stdin(o.id)).run(); err != nil {
				t.Errorf("%s: final DEL: %v", o.id, err)
			}
		}
	}
	n.wantNoLeases()
	n.wantFsckClean()
}

func maxDur(s *durStats) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Max(s.d)
}

// waitPidFile polls for the pid the IPAM wrapper records; it returns 0 if
// the main plugin ended without starting the IPAM.
func waitPidFile(t *testing.T, file string, rc *rawCall) int {
	t.Helper()
	deadline := time.Now().Add(pluginTimeout)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(file); err == nil {
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatalf("pid file %s: %v", file, err)
			}
			return pid
		}
		if syscall.Kill(rc.cmd.Process.Pid, 0) != nil {
			return 0
		}
		var ws syscall.WaitStatus
		if wpid, _ := syscall.Wait4(rc.cmd.Process.Pid, &ws, syscall.WNOHANG|syscall.WNOWAIT, nil); wpid == rc.cmd.Process.Pid {
			return 0 // a zombie: it ended before the IPAM started
		}
		time.Sleep(200 * time.Microsecond) // polling for the IPAM to start
	}
	t.Fatalf("the IPAM did not start within %s", pluginTimeout)
	return 0
}

// stdoutIPs returns the sorted addresses of an ADD result printed by a
// plugin.
func stdoutIPs(t *testing.T, out []byte) []string {
	t.Helper()
	var r struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("ADD result %q: %v", out, err)
	}
	var ips []string
	for _, ip := range r.IPs {
		ips = append(ips, bareIP(ip.Address))
	}
	sort.Strings(ips)
	return ips
}

// isTempLink reports whether name is one of maclan's temporary link names
// ("mlv" and 10 hex digits, pkg/macvlan).
func isTempLink(name string) bool {
	if len(name) != 13 || !strings.HasPrefix(name, "mlv") {
		return false
	}
	_, err := strconv.ParseUint(name[3:], 16, 64)
	return err == nil
}

// fsckProblems returns fsck's problem lines (all but the summary).
func fsckProblems(out string) []string {
	var ps []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line != "" && !strings.Contains(line, " problems") {
			ps = append(ps, line)
		}
	}
	return ps
}
