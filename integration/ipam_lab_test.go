//go:build integration

package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
)

// Addressing through the lab: a small range filled by concurrent ADDs,
// static requests through maclan, maclan with the reference IPAM plugins,
// and the VERSION verb.
//
// Each test below takes its own /26 of TEST-NET-1 (192.0.2.0/24, RFC 5737),
// which no other test of the suite uses (they use the lab's 198.51.100.0/24,
// 203.0.113.0/24 for the benchmark's reference flavour and 10.64.0.0/10 in
// configurations only), so that no address of these tests meets another
// test's on the lab's LAN. No gateway of these subnets exists on the LAN, so
// the ranges carry no routes.
const (
	burstSubnet  = "192.0.2.64/26"  // TestConcurrentAddsIntoSlash26
	staticSubnet = "192.0.2.128/26" // TestStaticRequestThroughMaclan
	refSubnet    = "192.0.2.192/26" // TestMaclanWithReferenceIPAMs
)

// v4IPAM is an IPAM section of ipamType with one IPv4 range set: the whole
// subnet, gateway and range bounds left to their defaults.
func (n *testNet) v4IPAM(subnet string) map[string]any {
	return map[string]any{
		"type":    ipamType,
		"dataDir": n.dataDir,
		"ranges":  []any{[]any{map[string]any{"subnet": subnet}}},
	}
}

// usableAddrs lists what a range over the whole of an IPv4 subnet with the
// default gateway may hand out, by the rules of pkg/ipam/iprange: every
// address but the network address, the broadcast address and the gateway,
// which defaults to the first host address.
func usableAddrs(subnet string) []string {
	p := netip.MustParsePrefix(subnet).Masked()
	gateway := p.Addr().Next()
	var out []string
	for a := gateway.Next(); p.Contains(a.Next()); a = a.Next() { // up to, not including, the broadcast address
		out = append(out, a.String())
	}
	return out
}

// leaseOwners maps each container ID to the sorted addresses the IPAM holds
// for it: through `maclan-ipam ls`, or from host-local's lease files (first
// line: the container ID) when the suite runs with MACLAN_TEST_IPAM=host-local.
func (n *testNet) leaseOwners() map[string][]string {
	n.t.Helper()
	if ipamType == "maclan-ipam" {
		return n.leasesByOwner()
	}
	owners := map[string][]string{}
	dir := filepath.Join(n.dataDir, n.name)
	for _, ip := range n.heldLeases() {
		b, err := os.ReadFile(filepath.Join(dir, ip))
		if err != nil {
			n.t.Fatal(err)
		}
		id, _, _ := strings.Cut(string(b), "\n")
		id = strings.TrimSpace(id)
		owners[id] = append(owners[id], ip)
	}
	for _, ips := range owners {
		sort.Strings(ips)
	}
	return owners
}

// exhaustedMessage is what the IPAM says when a range set has no address left.
func exhaustedMessage() string {
	if ipamType == "host-local" {
		return "no IP addresses available"
	}
	return "no free address"
}

// onlyV4 returns the single IPv4 address (CIDR) of the container's eth0 as
// the kernel holds it, failing t unless there is exactly one and no global
// IPv6 address.
func onlyV4(t *testing.T, c *netNS) string {
	t.Helper()
	l := c.macvlan(t, "eth0")
	v4 := c.addrs(t, l, netlink.FAMILY_V4)
	if len(v4) != 1 {
		t.Errorf("%s eth0 has IPv4 addresses %v, want one", c.name, v4)
		return ""
	}
	if v6 := c.addrs(t, l, netlink.FAMILY_V6); len(v6) != 0 {
		t.Errorf("%s eth0 has global IPv6 addresses %v, want none", c.name, v6)
	}
	return v4[0].IPNet.String()
}

// onlyResultV4 returns the single address (CIDR) of an ADD result, failing t
// unless there is exactly one, IPv4, on the container interface.
func onlyResultV4(t *testing.T, res *current.Result) string {
	t.Helper()
	if len(res.IPs) != 1 || res.IPs[0].Address.IP.To4() == nil {
		t.Errorf("result IPs %v, want one IPv4 address", res.IPs)
		return ""
	}
	ipc := res.IPs[0]
	if ipc.Interface == nil || *ipc.Interface >= len(res.Interfaces) || res.Interfaces[*ipc.Interface].Name != "eth0" {
		t.Errorf("result IP %s does not point at eth0 in %+v", ipc.Address.String(), res.Interfaces)
	}
	return ipc.Address.String()
}

// TestConcurrentAddsIntoSlash26: 64 containers ADD at once into a /26 whose
// range leaves 61 addresses (64 less the network, broadcast and default
// gateway addresses). Exactly 61 succeed with 61 distinct addresses, each on
// its container's eth0; the other 3 fail for want of an address and leave
// neither a link nor a lease. Then 64 DELs at once, the failed ones
// included, as a runtime does: all succeed and nothing is left.
func TestConcurrentAddsIntoSlash26(t *testing.T) {
	const containers = 64
	usable := usableAddrs(burstSubnet)
	if len(usable) != 61 {
		t.Fatalf("usable addresses of %s: %d, want 61 (64 less network, broadcast, gateway)", burstSubnet, len(usable))
	}
	prefix := netip.MustParsePrefix(burstSubnet)

	n := newNet(t)
	conf := n.mainConf()
	conf["ipam"] = n.v4IPAM(burstSubnet)
	list := n.list("1.1.0", conf)
	ctrs := make([]*netNS, containers)
	atts := make([]*attachment, containers)
	for i := range ctrs {
		ctrs[i] = newContainer(t)
		atts[i] = n.attach(list, ctrs[i], "eth0")
	}

	type outcome struct {
		res *current.Result
		err error
	}
	burst := func(call func(i int) outcome) ([]outcome, time.Duration) {
		out := make([]outcome, containers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range atts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				out[i] = call(i)
			}()
		}
		t0 := time.Now()
		close(start)
		wg.Wait()
		return out, time.Since(t0)
	}

	adds, addWall := burst(func(i int) outcome {
		res, err := atts[i].add() // registers the cleanup DEL, whatever the outcome
		if err != nil {
			return outcome{err: err}
		}
		cur, err := current.NewResultFromResult(res)
		if err != nil {
			return outcome{err: fmt.Errorf("convert ADD result: %w", err)}
		}
		return outcome{res: cur}
	})
	t.Logf("figure: %d concurrent ADDs into %s: wall time %v", containers, burstSubnet, addWall)

	owners := n.leaseOwners()
	byAddr := map[string]string{} // address -> container
	var failed []int
	for i, o := range adds {
		c := ctrs[i]
		if o.err != nil {
			failed = append(failed, i)
			t.Logf("ADD %s: code %d: %v", c.name, cniCode(o.err), o.err)
			if !strings.Contains(o.err.Error(), exhaustedMessage()) {
				t.Errorf("ADD %s failed with %v (code %d), want %q", c.name, o.err, cniCode(o.err), exhaustedMessage())
			}
			if ipamType == "maclan-ipam" && cniCode(o.err) != 100 {
				t.Errorf("ADD %s failed with code %d, want 100 (no free address)", c.name, cniCode(o.err))
			}
			wantOnlyLoopback(t, c)
			if held, ok := owners[c.name]; ok {
				t.Errorf("failed ADD %s left leases %v", c.name, held)
			}
			continue
		}
		got := onlyResultV4(t, o.res)
		onLink := onlyV4(t, c)
		if got != onLink {
			t.Errorf("%s: result address %s, eth0 holds %s", c.name, got, onLink)
		}
		p, err := netip.ParsePrefix(onLink)
		if err != nil || p.Bits() != prefix.Bits() || !prefix.Contains(p.Addr()) {
			t.Errorf("%s: eth0 address %q not in %s", c.name, onLink, burstSubnet)
			continue
		}
		ip := p.Addr().String()
		if other, dup := byAddr[ip]; dup {
			t.Errorf("address %s handed to both %s and %s", ip, other, c.name)
		}
		byAddr[ip] = c.name
		if held := owners[c.name]; !slices.Equal(held, []string{ip}) {
			t.Errorf("IPAM holds %v for %s, want [%s]", held, c.name, ip)
		}
	}
	if len(failed) != containers-len(usable) {
		t.Errorf("%d ADDs failed, want exactly %d", len(failed), containers-len(usable))
	}
	got := make([]string, 0, len(byAddr))
	for ip := range byAddr {
		got = append(got, ip)
	}
	sortAddrs(got)
	if !slices.Equal(got, usable) {
		t.Errorf("addresses handed out (%d): %v\nwant every usable address of %s (%d): %v", len(got), got, burstSubnet, len(usable), usable)
	}
	if nOwners := len(owners); nOwners != len(usable) {
		t.Errorf("IPAM holds leases for %d containers, want %d", nOwners, len(usable))
	}

	dels, delWall := burst(func(i int) outcome { return outcome{err: atts[i].del()} })
	t.Logf("figure: %d concurrent DELs: wall time %v", containers, delWall)
	for i, o := range dels {
		if o.err != nil {
			t.Errorf("DEL %s: %v", ctrs[i].name, o.err)
		}
	}
	for _, c := range ctrs {
		wantOnlyLoopback(t, c)
	}
	if mv := hostMacvlans(t); len(mv) != 0 {
		t.Errorf("macvlans left in the lab host: %v", mv)
	}
	n.wantNoLeases()
	if owners := n.leaseOwners(); len(owners) != 0 {
		t.Errorf("IPAM still holds leases after the DELs: %v", owners)
	}
	if ipamType == "maclan-ipam" {
		n.wantFsckClean()
	}
}

// sortAddrs sorts addresses numerically.
func sortAddrs(ips []string) {
	slices.SortFunc(ips, func(a, b string) int {
		return netip.MustParseAddr(a).Compare(netip.MustParseAddr(b))
	})
}

// TestStaticRequestThroughMaclan: static addresses asked for through the
// main plugin reach the IPAM and the container: one in the network
// configuration's args.cni.ips, one in CNI_ARGS IP= (libcni's
// RuntimeConf.Args). A second container asking for an address already held
// fails with an error that names it, and leaves no link and no lease; its DEL
// releases nothing of the holder's.
func TestStaticRequestThroughMaclan(t *testing.T) {
	const (
		fromArgs    = "192.0.2.140"
		fromCNIArgs = "192.0.2.150"
	)
	bits := netip.MustParsePrefix(staticSubnet).Bits()
	n := newNet(t)
	plain := n.mainConf()
	plain["ipam"] = n.v4IPAM(staticSubnet)
	withArgs := n.mainConf()
	withArgs["ipam"] = n.v4IPAM(staticSubnet)
	withArgs["args"] = map[string]any{"cni": map[string]any{"ips": []string{fromArgs}}}
	argsList := n.list("1.1.0", withArgs)
	plainList := n.list("1.1.0", plain) // the same network: same name, same store

	c1, c2 := newContainer(t), newContainer(t)
	want := map[*netNS]string{
		c1: fmt.Sprintf("%s/%d", fromArgs, bits),
		c2: fmt.Sprintf("%s/%d", fromCNIArgs, bits),
	}
	a1 := n.attach(argsList, c1, "eth0")
	a2 := n.attach(plainList, c2, "eth0").withArgs([2]string{"IP", fromCNIArgs})
	for _, step := range []struct {
		a   *attachment
		how string
	}{{a1, "args.cni.ips"}, {a2, "CNI_ARGS IP="}} {
		c := step.a.ctr
		res := step.a.mustAdd()
		if got := onlyResultV4(t, res); got != want[c] {
			t.Errorf("%s: result address %s, want %s", step.how, got, want[c])
		}
		if got := onlyV4(t, c); got != want[c] {
			t.Errorf("%s: eth0 of %s holds %s, want %s", step.how, c.name, got, want[c])
		}
		wantResultInterface(t, res, c, "eth0", c.link(t, "eth0").Attrs().HardwareAddr.String())
		if err := step.a.check(); err != nil {
			t.Errorf("%s: CHECK: %v", step.how, err)
		}
	}
	held := map[string][]string{c1.name: {fromArgs}, c2.name: {fromCNIArgs}}
	if got := n.leaseOwners(); !mapsEqual(got, held) {
		t.Fatalf("IPAM holds %v, want %v", got, held)
	}

	// A second container for each address already held, asked for in the
	// same way as the holder did.
	for _, tc := range []struct {
		how  string
		ip   string
		make func(c *netNS) *attachment
	}{
		{"args.cni.ips", fromArgs, func(c *netNS) *attachment { return n.attach(argsList, c, "eth0") }},
		{"CNI_ARGS IP=", fromCNIArgs, func(c *netNS) *attachment {
			return n.attach(plainList, c, "eth0").withArgs([2]string{"IP", fromCNIArgs})
		}},
	} {
		c := newContainer(t)
		a := tc.make(c)
		res, err := a.add()
		if err == nil {
			t.Errorf("%s: ADD of %s already held by another container succeeded: %v", tc.how, tc.ip, res)
		} else {
			wantErrorMentions(t, err, tc.ip)
			t.Logf("%s: ADD of a held address: code %d: %v", tc.how, cniCode(err), err)
		}
		wantOnlyLoopback(t, c)
		if mv := hostMacvlans(t); len(mv) != 0 {
			t.Errorf("%s: macvlans left in the lab host: %v", tc.how, mv)
		}
		if got := n.leaseOwners(); !mapsEqual(got, held) {
			t.Errorf("%s: after the failed ADD the IPAM holds %v, want %v", tc.how, got, held)
		}
		// The runtime DELs the failed attachment: the holder keeps its lease.
		if err := a.del(); err != nil {
			t.Errorf("%s: DEL after the failed ADD: %v", tc.how, err)
		}
		if got := n.leaseOwners(); !mapsEqual(got, held) {
			t.Errorf("%s: after the failed container's DEL the IPAM holds %v, want %v", tc.how, got, held)
		}
	}
	for c, w := range want {
		if got := onlyV4(t, c); got != w {
			t.Errorf("eth0 of %s holds %s after the failed ADDs, want %s", c.name, got, w)
		}
	}

	for _, a := range []*attachment{a1, a2} {
		if err := a.del(); err != nil {
			t.Errorf("DEL %s: %v", a.ctr.name, err)
		}
		wantOnlyLoopback(t, a.ctr)
	}
	n.wantNoLeases()
}

func mapsEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !slices.Equal(v, w) {
			return false
		}
	}
	return true
}

// TestMaclanWithReferenceIPAMs: maclan delegates to the reference host-local
// and static IPAM plugins (from make tools) as to its own: ADD puts their
// address on eth0 and in the result, CHECK passes, DEL removes the link (and
// host-local's lease).
func TestMaclanWithReferenceIPAMs(t *testing.T) {
	const staticAddr = "192.0.2.200/26"
	cases := []struct {
		ipam string
		conf func(n *testNet) map[string]any
		// want checks the ADD's address; leases lists what the IPAM holds.
		want   func(t *testing.T, cidr string)
		leases func(n *testNet) []string
	}{
		{
			ipam: "host-local",
			conf: func(n *testNet) map[string]any {
				return map[string]any{
					"type":    "host-local",
					"dataDir": n.dataDir,
					"ranges":  []any{[]any{map[string]any{"subnet": refSubnet}}},
				}
			},
			want: func(t *testing.T, cidr string) {
				p := netip.MustParsePrefix(refSubnet)
				got, err := netip.ParsePrefix(cidr)
				if err != nil || got.Bits() != p.Bits() || !slices.Contains(usableAddrs(refSubnet), got.Addr().String()) {
					t.Errorf("host-local handed out %q, want a usable address of %s", cidr, refSubnet)
				}
			},
			leases: func(n *testNet) []string { return hostLocalLeases(n.t, n.dataDir, n.name) },
		},
		{
			ipam: "static",
			conf: func(*testNet) map[string]any {
				return map[string]any{"type": "static", "addresses": []any{map[string]any{"address": staticAddr}}}
			},
			want: func(t *testing.T, cidr string) {
				if cidr != staticAddr {
					t.Errorf("static handed out %q, want %s", cidr, staticAddr)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.ipam, func(t *testing.T) {
			if !inDirs(tc.ipam, theLab.toolsDir) {
				t.Skipf("reference IPAM %s not in %s: run make tools (it is in the Makefile's REF_PLUGINS)", tc.ipam, theLab.toolsDir)
			}
			n := newNet(t)
			conf := n.mainConf()
			conf["ipam"] = tc.conf(n)
			c := newContainer(t)
			a := n.attach(n.list("1.0.0", conf), c, "eth0")
			res := a.mustAdd()
			got := onlyResultV4(t, res)
			tc.want(t, got)
			if onLink := onlyV4(t, c); onLink != got {
				t.Errorf("eth0 holds %s, result says %s", onLink, got)
			}
			wantResultInterface(t, res, c, "eth0", c.link(t, "eth0").Attrs().HardwareAddr.String())
			if tc.leases != nil {
				if l := tc.leases(n); !slices.Equal(l, []string{bareIP(got)}) {
					t.Errorf("%s holds %v, want [%s]", tc.ipam, l, bareIP(got))
				}
			}
			if err := a.check(); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if err := a.del(); err != nil {
				t.Errorf("DEL: %v", err)
			}
			wantOnlyLoopback(t, c)
			if mv := hostMacvlans(t); len(mv) != 0 {
				t.Errorf("macvlans left in the lab host: %v", mv)
			}
			if tc.leases != nil {
				if l := tc.leases(n); len(l) != 0 {
					t.Errorf("%s still holds %v after DEL", tc.ipam, l)
				}
			}
		})
	}
}

// hostLocalLeases lists the addresses host-local holds in network name: one
// file per address under <dataDir>/<name>.
func hostLocalLeases(t *testing.T, dataDir, name string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, name))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, e := range entries {
		if ip, err := netip.ParseAddr(e.Name()); err == nil && e.Type().IsRegular() {
			ips = append(ips, ip.String())
		}
	}
	sortAddrs(ips)
	return ips
}

// TestVersionVerb: the VERSION command of maclan and maclan-ipam, asked
// through libcni, reports every spec version from 0.1.0 to 1.1.0.
func TestVersionVerb(t *testing.T) {
	wantVersions := []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}
	for _, plugin := range []string{"maclan", "maclan-ipam"} {
		t.Run(plugin, func(t *testing.T) {
			if !inDirs(plugin, theLab.binDir) {
				t.Fatalf("%s not in %s", plugin, theLab.binDir)
			}
			n := newNet(t)
			// CNI_PATH is bin/ only, so that the binary under test answers.
			cni := libcni.NewCNIConfigWithCacheDir([]string{theLab.binDir}, t.TempDir(), n.guardedExec())
			var got []string
			err := theLab.inHost(func() error {
				ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
				defer cancel()
				info, err := cni.GetVersionInfo(ctx, plugin)
				if err != nil {
					return err
				}
				got = info.SupportedVersions()
				return nil
			})
			if err != nil {
				t.Fatalf("VERSION: %v", err)
			}
			t.Logf("%s supports %v", plugin, got)
			for _, v := range wantVersions {
				if !slices.Contains(got, v) {
					t.Errorf("%s reports supported versions %v, which lack %s", plugin, got, v)
				}
			}
		})
	}
}
