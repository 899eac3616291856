//go:build integration

package integration

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// Lease lifecycle (docs/ipam.md, "Lease lifecycle"): the IPAM gives back
// the leases of containers gone without a DEL, by itself, and a returning
// workload gets its address back. Run through maclan and the built
// binaries. A reboot is simulated by giving the plugins another boot
// identity (MACLAN_TEST_BOOT_ID, a test-only override), and two hosts on
// one machine by MACLAN_TEST_HOST_ID; libcni passes the test process's
// environment to the plugins.
//
// Each test uses a /29 of 192.0.2.0/26 (TEST-NET-1, RFC 5737), which no
// other test uses: .2-.6 may be handed out (.1 is the default gateway).

func (n *testNet) lifecycleList(subnet string, ipam map[string]any) *libcni.NetworkConfigList {
	conf := n.mainConf()
	v4 := n.v4IPAM(subnet)
	maps.Copy(v4, ipam)
	conf["ipam"] = v4
	return n.list("1.1.0", conf)
}

func owners(n *testNet) []string {
	return slices.Sorted(maps.Keys(n.leaseOwners()))
}

func TestLifecycleRebootReclaimsEarlierBoot(t *testing.T) {
	n := newNet(t)
	list := n.lifecycleList("192.0.2.0/29", nil)
	t.Setenv("MACLAN_TEST_BOOT_ID", "boot-a")
	before := n.attach(list, newContainer(t), "eth0")
	before.mustAdd()

	t.Setenv("MACLAN_TEST_BOOT_ID", "boot-b") // the host rebooted
	after := n.attach(list, newContainer(t), "eth0")
	after.mustAdd()
	if got := owners(n); !slices.Equal(got, []string{after.ctr.name}) {
		t.Errorf("after the reboot the store holds leases of %v, want only %s's", got, after.ctr.name)
	}
	// This boot's leases stay, call after call.
	third := n.attach(list, newContainer(t), "eth0")
	third.mustAdd()
	if got, want := owners(n), slices.Sorted(slices.Values([]string{after.ctr.name, third.ctr.name})); !slices.Equal(got, want) {
		t.Errorf("store holds leases of %v, want %v", got, want)
	}
}

// The leases of a boot are written without fsync (docs/ipam.md, "Leases
// that live as long as the boot"), so a power cut can leave a lease lost
// while its bitmap bit reached the disk. The first call of the next boot
// repairs the store before anything else: every address of the range is
// handed out again, and fsck finds nothing left to repair.
func TestLifecyclePowerCutRepaired(t *testing.T) {
	n := newNet(t)
	list := n.lifecycleList("192.0.2.48/29", nil)
	t.Setenv("MACLAN_TEST_BOOT_ID", "boot-a")
	lost := n.attach(list, newContainer(t), "eth0").mustAdd().IPs[0].Address.IP.String()
	n.attach(list, newContainer(t), "eth0").mustAdd()
	if err := os.Remove(filepath.Join(n.dataDir, n.name, "leases", lost)); err != nil {
		t.Fatal(err)
	}

	t.Setenv("MACLAN_TEST_BOOT_ID", "boot-b") // the power is back
	got := map[string]bool{}
	for range 5 { // the whole range: .50 to .54
		got[n.attach(list, newContainer(t), "eth0").mustAdd().IPs[0].Address.IP.String()] = true
	}
	if !got[lost] || len(got) != 5 {
		t.Errorf("after the power cut the range handed out %v; want all five addresses, %s among them", slices.Sorted(maps.Keys(got)), lost)
	}
	if code, out, errOut := ipamCLI(t, "fsck", "--data-dir", n.dataDir, "--network", n.name); code != 0 || len(fsckProblems(out)) != 0 {
		t.Errorf("fsck after the repair: exit %d\n%s%s", code, out, errOut)
	}
}

func TestLifecycleRebootReclaimOff(t *testing.T) {
	n := newNet(t)
	list := n.lifecycleList("192.0.2.8/29", map[string]any{"reclaimAfterReboot": false})
	t.Setenv("MACLAN_TEST_BOOT_ID", "boot-a")
	before := n.attach(list, newContainer(t), "eth0")
	before.mustAdd()
	t.Setenv("MACLAN_TEST_BOOT_ID", "boot-b")
	n.attach(list, newContainer(t), "eth0").mustAdd()
	if got := owners(n); !slices.Contains(got, before.ctr.name) {
		t.Errorf("reclaimAfterReboot false: the earlier boot's lease was released (%v)", got)
	}
}

// Another host's leases survive this host's reboot (one store shared by
// two hosts, as an etcd network is; each host keeps its own marker).
func TestLifecycleRebootKeepsOtherHosts(t *testing.T) {
	n := newNet(t)
	list := n.lifecycleList("192.0.2.16/29", nil)
	t.Setenv("MACLAN_TEST_HOST_ID", "host-b")
	t.Setenv("MACLAN_TEST_BOOT_ID", "boot-b1")
	other := n.attach(list, newContainer(t), "eth0")
	other.mustAdd()
	t.Setenv("MACLAN_TEST_HOST_ID", "host-a")
	t.Setenv("MACLAN_TEST_BOOT_ID", "boot-a1")
	mine := n.attach(list, newContainer(t), "eth0")
	mine.mustAdd()
	t.Setenv("MACLAN_TEST_BOOT_ID", "boot-a2") // host A reboots
	n.attach(list, newContainer(t), "eth0").mustAdd()
	got := owners(n)
	if slices.Contains(got, mine.ctr.name) {
		t.Errorf("host A's lease of its earlier boot survived its reboot: %v", got)
	}
	if !slices.Contains(got, other.ctr.name) {
		t.Errorf("host B's lease was released by host A's reboot: %v", got)
	}
}

// A namespace deleted without DEL frees its lease when the range is full,
// and only once older than staleAfter; a lease whose namespace exists is
// never freed.
func TestLifecycleVanishedNamespace(t *testing.T) {
	n := newNet(t)
	const subnet = "192.0.2.24/29"
	patient := n.lifecycleList(subnet, map[string]any{"staleAfter": "1h"})
	var live []*attachment
	for range 4 {
		a := n.attach(patient, newContainer(t), "eth0")
		a.mustAdd()
		live = append(live, a)
	}
	vanished := newContainer(t)
	va := n.attach(patient, vanished, "eth0")
	va.mustAdd()
	removeContainer(t, vanished) // the runtime lost it: no DEL

	_, err := n.attach(patient, newContainer(t), "eth0").add()
	wantCNIError(t, err, 100, "no free address", "192.0.2.25-192.0.2.30")
	if got := owners(n); !slices.Contains(got, vanished.name) {
		t.Errorf("the lease of %s was freed before staleAfter: %v", vanished.name, got)
	}

	// The same network, a runtime that counts the lease stale already.
	eager := n.lifecycleList(subnet, map[string]any{"staleAfter": "1ms"})
	newcomer := n.attach(eager, newContainer(t), "eth0")
	newcomer.mustAdd()
	got := owners(n)
	if slices.Contains(got, vanished.name) {
		t.Errorf("the vanished namespace's lease is still held: %v", got)
	}
	for _, a := range append(live, newcomer) {
		if !slices.Contains(got, a.ctr.name) {
			t.Errorf("the lease of live container %s was freed: %v", a.ctr.name, got)
		}
	}
	// Full again, and every namespace exists: nothing to reclaim.
	_, err = n.attach(eager, newContainer(t), "eth0").add()
	wantCNIError(t, err, 100, "no free address")
}

// A sticky workload (the same pod namespace and name, a new container)
// gets its address back, and nobody else does during the hold unless the
// range is otherwise full.
func TestLifecycleStickyWorkload(t *testing.T) {
	n := newNet(t)
	list := n.lifecycleList("192.0.2.32/29", map[string]any{"stickyFor": "1h"})
	pod := func(name, uid string) [][2]string {
		return [][2]string{{"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", name}, {"K8S_POD_UID", uid}}
	}
	first := n.attach(list, newContainer(t), "eth0").withArgs(pod("db-0", "uid-1")...)
	addr := onlyResultV4(t, first.mustAdd())
	if err := first.del(); err != nil {
		t.Fatal(err)
	}
	var others []*attachment
	for i := range 3 {
		o := n.attach(list, newContainer(t), "eth0").withArgs(pod("web-"+string(rune('a'+i)), "u")...)
		if got := onlyResultV4(t, o.mustAdd()); got == addr {
			t.Errorf("%s got %s, held for shop/db-0", o.ctr.name, got)
		}
		others = append(others, o)
	}
	back := n.attach(list, newContainer(t), "eth0").withArgs(pod("db-0", "uid-2")...)
	if got := onlyResultV4(t, back.mustAdd()); got != addr {
		t.Errorf("shop/db-0 came back with %s, want its %s", got, addr)
	}
	if err := back.del(); err != nil {
		t.Fatal(err)
	}
	// Held again; the range has one other free address (.2-.6: 3 others,
	// 1 hold): the next newcomer takes that, the one after it the hold.
	n.attach(list, newContainer(t), "eth0").mustAdd()
	last := n.attach(list, newContainer(t), "eth0")
	if got := onlyResultV4(t, last.mustAdd()); got != addr {
		t.Errorf("with the range otherwise full the newcomer got %s, want the held %s", got, addr)
	}
}

// A requested address held by another attachment: code 101.
func TestLifecycleRequestedAddressTaken(t *testing.T) {
	n := newNet(t)
	list := n.lifecycleList("192.0.2.40/29", nil)
	holder := n.attach(list, newContainer(t), "eth0")
	addr := onlyResultV4(t, holder.mustAdd())
	ip, _, _ := cutPrefix(addr)
	_, err := n.attach(list, newContainer(t), "eth0").withArgs([2]string{"IP", ip}).add()
	wantCNIError(t, err, 101, ip)
}

func cutPrefix(cidr string) (ip, bits string, ok bool) {
	for i := range len(cidr) {
		if cidr[i] == '/' {
			return cidr[:i], cidr[i+1:], true
		}
	}
	return cidr, "", false
}

// On a two-host etcd network, a host's reboot gives back its own leases of
// the earlier boot and never the other host's.
func TestLifecycleEtcdRebootKeepsOtherHost(t *testing.T) {
	requireEtcd(t)
	startLabEtcd(t)
	a, b := hostA(t), newHostB(t)
	e := newEtcdNet("30s")
	as := e.attachments(t, a, 2)
	bs := e.attachments(t, b, 1)
	t.Setenv("MACLAN_TEST_HOST_ID", "host-a")
	t.Setenv("MACLAN_TEST_BOOT_ID", "boot-a1")
	as[0].add()
	t.Setenv("MACLAN_TEST_HOST_ID", "host-b")
	t.Setenv("MACLAN_TEST_BOOT_ID", "boot-b1")
	bs[0].add()
	t.Setenv("MACLAN_TEST_HOST_ID", "host-a")
	t.Setenv("MACLAN_TEST_BOOT_ID", "boot-a2") // host A reboots
	as[1].add()
	for _, at := range []*etcdAttachment{as[0], bs[0], as[1]} {
		if at.err != nil {
			t.Fatalf("ADD %s on host %s: %v", at.ctr.name, at.h.name, at.err)
		}
	}
	held := e.leases(t)
	owners := map[string]bool{}
	for _, ctr := range held {
		owners[ctr] = true
	}
	if owners[as[0].ctr.name] {
		t.Errorf("host A's lease of its earlier boot survived its reboot: %v", held)
	}
	if !owners[bs[0].ctr.name] {
		t.Errorf("host B's lease was released by host A's reboot: %v", held)
	}
	if !owners[as[1].ctr.name] {
		t.Errorf("the new ADD on host A holds no lease: %v", held)
	}
}
