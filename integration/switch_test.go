//go:build integration

package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// The master of last resort with linkInContainer, an interface of the
// container's name that another plugin made, and the switch of a live node
// from the reference macvlan + host-local to maclan + maclan-ipam (README,
// "Switching from the reference plugins").

// swtUplink gives container c an interface name whose other end is a port
// of the lab's switch, up on both sides: the container's own way onto the
// LAN, as linkInContainer expects.
func swtUplink(t *testing.T, c *netNS, name string) {
	t.Helper()
	port := fmt.Sprintf("p-u%d", theLab.seq.Add(1))
	sw := theLab.sw.name
	theLab.ip(t, "-n", sw, "link", "add", port, "type", "veth", "peer", "name", name, "netns", c.name)
	t.Cleanup(func() {
		if _, err := theLab.sw.nl.LinkByName(port); err == nil {
			_ = run("ip", "-n", sw, "link", "del", port) // best effort; the lab teardown removes it anyway
		}
	})
	theLab.ip(t, "-n", sw, "link", "set", port, "master", bridgeName, "up")
	theLab.ip(t, "-n", c.name, "link", "set", name, "up")
}

// swtNoRoutes drops the IPAM's routes: the container keeps the default route
// of its own uplink, which a second default route would collide with.
func swtNoRoutes(conf map[string]any) map[string]any {
	ipam := conf["ipam"].(map[string]any)
	delete(ipam, "routes")
	return conf
}

func TestLinkInContainerDefaultMaster(t *testing.T) {
	t.Run("default route in the container", func(t *testing.T) {
		c := newContainer(t)
		// A decoy made first, so that it has the lower index, and holding
		// the IPv6 default route: the IPv4 one wins (README, "master"). It
		// is a veth whose peer stays in the container, so a macvlan on it
		// could not reach the gateway.
		const decoy, uplink = "decoy0", "uplink0"
		theLab.ip(t, "-n", c.name, "link", "add", decoy, "type", "veth", "peer", "name", "decoy1")
		theLab.ip(t, "-n", c.name, "link", "set", "decoy1", "up")
		theLab.ip(t, "-n", c.name, "link", "set", decoy, "up")
		theLab.ip(t, "-n", c.name, "-6", "route", "add", "default", "dev", decoy)
		// The container's own uplink, on a subnet of its own, carries the
		// IPv4 default route. The lab's subnet is reached only through the
		// macvlan that ADD makes.
		swtUplink(t, c, uplink)
		theLab.ip(t, "-n", c.name, "addr", "add", "203.0.113.2/24", "dev", uplink)
		theLab.ip(t, "-n", c.name, "route", "add", "default", "via", "203.0.113.1", "dev", uplink)

		n := newNet(t)
		conf := swtNoRoutes(n.mainConf())
		delete(conf, "master")
		conf["linkInContainer"] = true
		a := n.attach(n.list("1.0.0", conf), c, "eth0")
		res := a.mustAdd()

		mv := c.macvlan(t, "eth0")
		up, dec := c.link(t, uplink).Attrs().Index, c.link(t, decoy).Attrs().Index
		if mv.ParentIndex != up {
			t.Errorf("macvlan parent index %d, want %d (%s, the container's IPv4 default-route interface; %s is %d)",
				mv.ParentIndex, up, uplink, decoy, dec)
		}
		// A parent in another namespace (the host's default-route eth0)
		// would show as a link netnsid.
		if mv.NetNsID != -1 {
			t.Errorf("macvlan parent lives in namespace id %d, want the container's own", mv.NetNsID)
		}
		if got := hostMacvlans(t); len(got) != 0 {
			t.Errorf("macvlans in the host namespace: %v, want none", got)
		}
		v4, _ := resultIPs(t, res)
		if v4 == "" {
			t.Fatalf("ADD result %v has no IPv4 address", res)
		}
		wantPing(t, c, gw4) // only the macvlan on the uplink reaches the lab's subnet
		if err := a.check(); err != nil {
			t.Errorf("CHECK: %v", err)
		}
		if err := a.del(); err != nil {
			t.Errorf("DEL: %v", err)
		}
		names := c.linkNames(t)
		slices.Sort(names)
		if want := []string{decoy, "decoy1", "lo", uplink}; !slices.Equal(names, want) {
			t.Errorf("links in the container after DEL: %v, want %v (eth0 gone, the master kept)", names, want)
		}
		n.wantNoLeases()
	})

	t.Run("no default route in the container", func(t *testing.T) {
		// The container has an uplink but no route; the lab's host
		// namespace, where the plugin runs, has a default route via its
		// eth0, which must not be taken instead.
		c := newContainer(t)
		const uplink = "uplink0"
		swtUplink(t, c, uplink)
		n := newNet(t)
		conf := swtNoRoutes(n.mainConf())
		delete(conf, "master")
		conf["linkInContainer"] = true
		_, err := n.attach(n.list("1.0.0", conf), c, "eth0").add()
		// The configuration is valid; what is missing is the container's
		// route: README, "Errors", code 999 "anything else, with the cause
		// in the message".
		wantCNIError(t, err, types.ErrInternal, `field "master" is empty`, "container namespace", "no default route")
		names := c.linkNames(t)
		slices.Sort(names)
		if want := []string{"lo", uplink}; !slices.Equal(names, want) {
			t.Errorf("links in the container after the failed ADD: %v, want %v", names, want)
		}
		if got := hostMacvlans(t); len(got) != 0 {
			t.Errorf("macvlans in the host namespace: %v, want none", got)
		}
		n.wantNoLeases()
	})
}

// swtBuffer collects the plugins' stderr.
type swtBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *swtBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *swtBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// swtCaptureStderr gives n a libcni client (guarded, with a cache of its
// own) that also keeps the plugins' stderr, where the README says a DEL
// left alone is reported.
func swtCaptureStderr(n *testNet) *swtBuffer {
	buf := &swtBuffer{}
	n.cni = libcni.NewCNIConfigWithCacheDir(n.path(), n.t.TempDir(), &guardedExec{DefaultExec: &invoke.DefaultExec{
		RawExec:       &invoke.RawExec{Stderr: io.MultiWriter(buf, testLogWriter{n.t})},
		PluginDecoder: version.PluginDecoder{},
	}})
	return buf
}

// TestDelLeavesForeignInterfaceAlone: README, "DEL is idempotent ... It
// never deletes an interface of that name that is not a macvlan", and
// "Troubleshooting": the plugin logs to stderr "an interface DEL left alone
// because it is not a macvlan". DEL succeeds (twice), and after an ADD it
// still releases the lease.
func TestDelLeavesForeignInterfaceAlone(t *testing.T) {
	const foreignAddr = "192.0.2.10/24"
	for _, tc := range []struct {
		name, kind string
		addFirst   bool
	}{
		{"veth, no ADD", "veth", false},
		{"bridge, no ADD", "bridge", false},
		{"veth in place of the macvlan after ADD", "veth", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNet(t)
			stderr := swtCaptureStderr(n)
			c := newContainer(t)
			a := n.attach(n.list("1.0.0", n.mainConf()), c, "eth0")
			if tc.addFirst {
				a.mustAdd()
				if got := n.heldLeases(); len(got) != 2 {
					t.Fatalf("IPAM holds %v after ADD, want two addresses", got)
				}
				// Another plugin's interface takes the name.
				theLab.ip(t, "-n", c.name, "link", "del", "eth0")
			}
			args := []string{"-n", c.name, "link", "add", "eth0", "type", tc.kind}
			if tc.kind == "veth" {
				args = append(args, "peer", "name", "veth-peer0")
			}
			theLab.ip(t, args...)
			if tc.kind == "veth" {
				theLab.ip(t, "-n", c.name, "link", "set", "veth-peer0", "up")
			}
			theLab.ip(t, "-n", c.name, "addr", "add", foreignAddr, "dev", "eth0")
			theLab.ip(t, "-n", c.name, "link", "set", "eth0", "up")
			before := c.link(t, "eth0")
			if before.Type() != tc.kind {
				t.Fatalf("eth0 is a %s, want %s", before.Type(), tc.kind)
			}

			for i := 1; i <= 2; i++ {
				if err := a.del(); err != nil {
					t.Errorf("DEL #%d: %v", i, err)
				}
			}

			after, err := c.nl.LinkByName("eth0")
			if err != nil {
				t.Fatalf("the %s eth0 is gone after DEL: %v", tc.kind, err)
			}
			if after.Type() != tc.kind || after.Attrs().Index != before.Attrs().Index {
				t.Errorf("eth0 after DEL: %s index %d, want the %s index %d", after.Type(), after.Attrs().Index, tc.kind, before.Attrs().Index)
			}
			if after.Attrs().Flags&net.FlagUp == 0 {
				t.Errorf("eth0 is down after DEL, want it left up")
			}
			if _, ok := c.findAddr(t, after, foreignAddr); !ok {
				t.Errorf("eth0 lost its address %s in DEL", foreignAddr)
			}
			if log := stderr.String(); !strings.Contains(log, "eth0") || !strings.Contains(log, "not a macvlan") {
				t.Errorf("plugin stderr %q does not report eth0 left alone as not a macvlan", log)
			}
			n.wantNoLeases()
		})
	}
}

// The switch runs on a range of six addresses per family, so that the
// containers of both plugins fill it: a new ADD can only get a free
// address or fail, never one an old container holds without the test
// seeing it.
const (
	swtEnd4 = "198.51.100.105"
	swtEnd6 = "2001:db8:100::105"
)

func swtIPAM(typ, dataDir string) map[string]any {
	ipam := map[string]any{
		"type": typ,
		"ranges": []any{
			[]any{map[string]any{"subnet": subnet4, "rangeStart": rangeStart4, "rangeEnd": swtEnd4, "gateway": gw4}},
			[]any{map[string]any{"subnet": subnet6, "rangeStart": rangeStart6, "rangeEnd": swtEnd6, "gateway": gw6}},
		},
		"routes": []any{map[string]any{"dst": "0.0.0.0/0"}, map[string]any{"dst": "::/0"}},
	}
	if dataDir != "" {
		ipam["dataDir"] = dataDir
	}
	return ipam
}

// swtLeases is `maclan-ipam ls` of the network: address -> "container/ifname".
func swtLeases(t *testing.T, dataDir, network string) map[string]string {
	t.Helper()
	code, out, errOut := ipamCLI(t, "ls", "--data-dir", dataDir, "--network", network, "-o", "json")
	if code != 0 {
		t.Fatalf("maclan-ipam ls: exit %d: %s %s", code, out, errOut)
	}
	var rows []lsLease
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("maclan-ipam ls output %q: %v", out, err)
	}
	m := map[string]string{}
	for _, r := range rows {
		m[r.IP] = r.ContainerID + "/" + r.IfName
	}
	return m
}

// swtHeld is what the test expects the store to hold: every address of the
// given attachments.
func swtHeld(as ...*swtCtr) map[string]string {
	m := map[string]string{}
	for _, a := range as {
		m[a.v4] = a.ctr.name + "/eth0"
		m[a.v6] = a.ctr.name + "/eth0"
	}
	return m
}

func swtWantLeases(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) { // fmt sorts map keys
		t.Errorf("%s: maclan-ipam holds %v, want %v", what, got, want)
	}
}

// swtCtr is one container of the switch with its addresses.
type swtCtr struct {
	*attachment
	v4, v6 string
}

func swtAdd(t *testing.T, n *testNet, list *libcni.NetworkConfigList) *swtCtr {
	t.Helper()
	c := newContainer(t)
	a := n.attach(list, c, "eth0")
	v4, v6 := resultIPs(t, a.mustAdd())
	if v4 == "" || v6 == "" {
		t.Fatalf("ADD in %s gave %q and %q, want an IPv4 and an IPv6 address", c.name, v4, v6)
	}
	return &swtCtr{attachment: a, v4: bareIP(v4), v6: bareIP(v6)}
}

// swtMigrate runs `maclan-ipam migrate` with args and fails t unless it
// adopted without problems.
func swtMigrate(t *testing.T, args ...string) {
	t.Helper()
	code, out, errOut := ipamCLI(t, append([]string{"migrate"}, args...)...)
	t.Logf("maclan-ipam migrate %s: %s %s", strings.Join(args, " "), strings.TrimSpace(out), strings.TrimSpace(errOut))
	if code != 0 || !strings.Contains(out, " 0 problems") {
		t.Fatalf("maclan-ipam migrate %v: exit %d, want 0 with no problems: %s %s", args, code, out, errOut)
	}
}

// TestSwitchFromReference switches a live node (README, "Switching from
// the reference plugins"): containers run by macvlan + host-local, the
// leases adopted by `maclan-ipam migrate`, the configuration's types
// changed, and then maclan + maclan-ipam serve new containers beside the old
// ones, CHECK them and DEL them.
//
// It follows the README's steps: migrate before the switch and once more
// after it (a container started by host-local between the two, as one is
// here, holds an address only the second run adopts), with --data-dir when
// the configuration sets "dataDir". Three cases: no dataDir (the README's
// command word for word), a dataDir kept by maclan-ipam, so that migrate
// works in the very directory host-local used (one lock file for both), and
// a new dataDir for maclan-ipam.
func TestSwitchFromReference(t *testing.T) {
	t.Run("default data directories, the README's command", func(t *testing.T) {
		n := newNet(t)
		hostLocalDir := filepath.Join("/var/lib/cni/networks", n.name)
		maclanDir := "/var/lib/cni/maclan"
		swtCleanupDirs(t, hostLocalDir, filepath.Join(maclanDir, n.name))
		migrate := []string{"--from-host-local", hostLocalDir, "--network", n.name}
		swtSwitch(t, n, "", "", maclanDir, migrate)
	})
	t.Run("dataDir set and kept, migrate in place", func(t *testing.T) {
		n := newNet(t)
		migrate := []string{"--from-host-local", filepath.Join(n.dataDir, n.name), "--network", n.name, "--data-dir", n.dataDir}
		swtSwitch(t, n, n.dataDir, n.dataDir, n.dataDir, migrate)
	})
	t.Run("dataDir set, a new one for maclan-ipam", func(t *testing.T) {
		n := newNet(t)
		newDir := t.TempDir()
		migrate := []string{"--from-host-local", filepath.Join(n.dataDir, n.name), "--network", n.name, "--data-dir", newDir}
		swtSwitch(t, n, n.dataDir, newDir, newDir, migrate)
	})
}

// swtCleanupDirs removes the network's state directories under
// /var/lib/cni when t ends (after every DEL the test registers later), and
// their parents if the plugins made them and left them empty.
func swtCleanupDirs(t *testing.T, dirs ...string) {
	t.Helper()
	var parents []string
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			t.Fatalf("%s already exists", d)
		}
		if _, err := os.Stat(filepath.Dir(d)); errors.Is(err, os.ErrNotExist) {
			parents = append(parents, filepath.Dir(d))
		}
	}
	t.Cleanup(func() {
		for _, d := range dirs {
			if err := os.RemoveAll(d); err != nil {
				t.Errorf("remove %s: %v", d, err)
			}
		}
		for _, p := range parents {
			_ = os.Remove(p) // only if empty: another network may have come meanwhile
		}
	})
}

// swtSwitch runs the switch on network n. oldDataDir and newDataDir are the
// "dataDir" of the configuration before and after ("" leaves it out),
// storeDir is where maclan-ipam keeps the network's store, migrate the
// arguments of `maclan-ipam migrate`.
func swtSwitch(t *testing.T, n *testNet, oldDataDir, newDataDir, storeDir string, migrate []string) {
	oldList := n.list("1.0.0", map[string]any{
		"type": "macvlan", "master": masterIf, "mode": "bridge", "ipam": swtIPAM("host-local", oldDataDir),
	})

	// Before: five containers by the reference plugins, two of them gone
	// again, so that the three left hold the first, third and fifth
	// address of each family and free ones lie between them.
	var old []*swtCtr
	for range 4 {
		old = append(old, swtAdd(t, n, oldList))
	}
	for _, i := range []int{1, 3} {
		if err := old[i].del(); err != nil {
			t.Fatalf("reference DEL of %s: %v", old[i].ctr.name, err)
		}
	}
	old = []*swtCtr{old[0], old[2]}

	// Step 1 (make install) is CNI_PATH here: bin/ and .tools/bin.
	// Step 2: adopt host-local's leases.
	swtMigrate(t, migrate...)
	swtWantLeases(t, "after migrate", swtLeases(t, storeDir, n.name), swtHeld(old...))

	// The node is live: a container starts with the old configuration
	// before it changes.
	old = append(old, swtAdd(t, n, oldList))

	// Step 3: the types change; every other field is kept.
	newList := n.list("1.0.0", map[string]any{
		"type": "maclan", "master": masterIf, "mode": "bridge", "ipam": swtIPAM("maclan-ipam", newDataDir),
	})
	for _, o := range old {
		o.list = newList // CHECK, DEL and the cleanup DEL go to maclan now
	}
	// docs/ipam.md, step 3 (missing in the README): migrate again, for
	// what host-local handed out in between.
	swtMigrate(t, migrate...)
	swtWantLeases(t, "after the second migrate", swtLeases(t, storeDir, n.name), swtHeld(old...))

	// Three new containers get the three free addresses of each family,
	// none that an old container holds.
	oldAddrs := map[string]string{}
	for _, o := range old {
		oldAddrs[o.v4], oldAddrs[o.v6] = o.ctr.name, o.ctr.name
	}
	var fresh []*swtCtr
	var got4, got6 []string
	for range 3 {
		c := swtAdd(t, n, newList)
		fresh = append(fresh, c)
		for _, ip := range []string{c.v4, c.v6} {
			if owner, ok := oldAddrs[ip]; ok {
				t.Errorf("maclan gave %s to %s, but the old container %s holds it", ip, c.ctr.name, owner)
			}
		}
		got4, got6 = append(got4, c.v4), append(got6, c.v6)
	}
	slices.Sort(got4)
	slices.Sort(got6)
	if want := []string{"198.51.100.101", "198.51.100.103", "198.51.100.105"}; !slices.Equal(got4, want) {
		t.Errorf("new IPv4 addresses %v, want the free %v", got4, want)
	}
	if want := []string{"2001:db8:100::101", "2001:db8:100::103", "2001:db8:100::105"}; !slices.Equal(got6, want) {
		t.Errorf("new IPv6 addresses %v, want the free %v", got6, want)
	}
	swtWantLeases(t, "after the new ADDs", swtLeases(t, storeDir, n.name), swtHeld(append(slices.Clone(old), fresh...)...))
	// The range is full: one more ADD fails and takes nothing.
	extra := n.attach(newList, newContainer(t), "eth0")
	if _, err := extra.add(); err == nil {
		t.Errorf("a seventh ADD on a range of six succeeded")
	}
	wantOnlyLoopback(t, extra.ctr)
	swtWantLeases(t, "after the ADD on a full range", swtLeases(t, storeDir, n.name), swtHeld(append(slices.Clone(old), fresh...)...))

	// Old and new containers share the LAN.
	wantPing(t, fresh[0].ctr, gw4)
	wantPing(t, fresh[0].ctr, old[0].v4)
	wantPing(t, old[2].ctr, fresh[2].v6)

	// README, "CHECK verifies the link ..., the addresses and routes of
	// the previous result, and asks the IPAM": also for a container ADDed
	// by the reference plugins, whose result libcni cached.
	for _, c := range append(slices.Clone(old), fresh...) {
		if err := c.check(); err != nil {
			t.Errorf("maclan CHECK of %s: %v", c.ctr.name, err)
		}
	}

	// Step 4: DEL of an old container removes its macvlan and releases the
	// adopted lease.
	for i, o := range old {
		if err := o.del(); err != nil {
			t.Errorf("maclan DEL of the old container %s: %v", o.ctr.name, err)
		}
		wantOnlyLoopback(t, o.ctr)
		swtWantLeases(t, "after DEL of "+o.ctr.name, swtLeases(t, storeDir, n.name), swtHeld(append(slices.Clone(old[i+1:]), fresh...)...))
	}
	for _, c := range append(fresh, &swtCtr{attachment: extra}) {
		if err := c.del(); err != nil {
			t.Errorf("maclan DEL of %s: %v", c.ctr.name, err)
		}
		wantOnlyLoopback(t, c.ctr)
	}
	swtWantLeases(t, "at the end", swtLeases(t, storeDir, n.name), map[string]string{})
	if code, out, errOut := ipamCLI(t, "fsck", "--data-dir", storeDir, "--network", n.name); code != 0 {
		t.Errorf("maclan-ipam fsck: exit %d, want 0: %s %s", code, out, errOut)
	}
	if got := hostMacvlans(t); len(got) != 0 {
		t.Errorf("macvlans in the host namespace: %v, want none", got)
	}
}
