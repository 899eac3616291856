//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// What the runtimes make of the "cniVersions" of the containerd/kubelet
// example conflist-examples/10-maclan.conflist:
//
//	"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"]
//
// A libcni that knows "cniVersions" (v1.2.0 on; this module vendors the
// version in go.mod) takes the highest listed version it implements, 1.1.0,
// and so sends STATUS and GC; below 1.1.0 libcni's GetStatusNetworkList and
// GCNetworkList send nothing and return success. containerd 1.6 vendors an
// older libcni that ignores "cniVersions" and runs the list at its
// "cniVersion", 1.0.0: ADD, CHECK and DEL only, which `make e2e` checks
// (e2e/run.sh: "containerd ran ADD once, at cniVersion 1.0.0 (from
// cniVersions)"). The tests below drive the example through this libcni in
// the lab.

const example10 = "../conflist-examples/10-maclan.conflist"

// TestClientsCNIVersionsPick: libcni picks 1.1.0 from the example, ADD runs
// at that version, and without "cniVersions" the same file stays at 1.0.0.
func TestClientsCNIVersionsPick(t *testing.T) {
	if v := version.Current(); v != "1.1.0" {
		t.Fatalf("the vendored libcni implements spec %s; this test is written for 1.1.0", v)
	}
	n := newNet(t)
	list := n.exampleList(example10)
	if list.CNIVersion != "1.1.0" {
		t.Fatalf("libcni runs the example at %s, want 1.1.0 (from cniVersions)", list.CNIVersion)
	}
	if old := example10Without(t, n, "cniVersions"); old.CNIVersion != "1.0.0" {
		t.Errorf("without cniVersions libcni runs the example at %s, want its cniVersion 1.0.0", old.CNIVersion)
	}
	c := newContainer(t)
	a := n.attach(list, c, "eth0")
	res, err := a.add()
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if res.Version() != "1.1.0" {
		t.Errorf("ADD result at spec %s, want 1.1.0", res.Version())
	}
	if err := a.check(); err != nil {
		t.Errorf("CHECK: %v", err)
	}
}

// TestClientsStatus: STATUS of the example reaches the plugins: it succeeds
// on the lab (master eth0 up, store ready) and fails with code 50 when the
// master is missing. The same file without cniVersions (1.0.0, what
// containerd 1.6 runs) gets no STATUS at all: libcni reports success even
// for the missing master.
func TestClientsStatus(t *testing.T) {
	n := newNet(t)
	status := func(list *libcni.NetworkConfigList) error {
		return theLab.inHost(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
			defer cancel()
			return n.cni.GetStatusNetworkList(ctx, list)
		})
	}
	if err := status(n.exampleList(example10)); err != nil {
		t.Errorf("STATUS of the example: %v", err)
	}
	missing := example10With(t, n, func(raw map[string]any) { firstPlugin(t, raw)["master"] = "nosuch0" })
	if missing.CNIVersion != "1.1.0" {
		t.Fatalf("changed example at %s, want 1.1.0", missing.CNIVersion)
	}
	err := status(missing)
	t.Logf("STATUS with master nosuch0: %v", err)
	wantCNIError(t, err, types.ErrPluginNotAvailable, "nosuch0")

	old := example10With(t, n, func(raw map[string]any) {
		delete(raw, "cniVersions")
		firstPlugin(t, raw)["master"] = "nosuch0"
	})
	if err := status(old); err != nil {
		t.Errorf("STATUS at 1.0.0 with master nosuch0: %v, want nil (libcni sends no STATUS below 1.1.0)", err)
	}
}

// TestClientsGC: GC of the example with the live attachments keeps their
// leases; with an empty list it releases them. GC runs with a cache that
// has no attachments, so that libcni sends only GC and none of the DELs it
// issues itself for cached attachments missing from the list: the leases
// are released by the IPAM's GC, and the links stay.
func TestClientsGC(t *testing.T) {
	if ipamType != "maclan-ipam" {
		t.Skip("the leases are read from maclan-ipam's store")
	}
	n := newNet(t)
	list := n.exampleList(example10)
	if list.CNIVersion != "1.1.0" {
		t.Fatalf("libcni runs the example at %s, want 1.1.0", list.CNIVersion)
	}
	c1, c2 := newContainer(t), newContainer(t)
	var live []types.GCAttachment
	var leases []string
	for _, c := range []*netNS{c1, c2} {
		res := n.attach(list, c, "eth0").mustAdd()
		v4, v6 := resultIPs(t, res)
		leases = append(leases, bareIP(v4), bareIP(v6))
		live = append(live, types.GCAttachment{ContainerID: c.name, IfName: "eth0"})
	}
	slices.Sort(leases)
	if got := n.heldLeases(); !slices.Equal(got, leases) {
		t.Fatalf("IPAM holds %v after two ADDs, want %v", got, leases)
	}
	gc := func(cni *libcni.CNIConfig, list *libcni.NetworkConfigList, valid []types.GCAttachment) {
		t.Helper()
		err := theLab.inHost(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
			defer cancel()
			return cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid})
		})
		if err != nil {
			t.Fatalf("GC with %v: %v", valid, err)
		}
	}

	// The runtime's own cache, which holds both attachments: nothing to DEL.
	gc(n.cni, list, live)
	if got := n.heldLeases(); !slices.Equal(got, leases) {
		t.Errorf("IPAM holds %v after GC with the live attachments, want %v", got, leases)
	}
	wantPing(t, c1, gw4)

	// At 1.0.0 (the file without cniVersions) libcni sends no GC: an empty
	// list releases nothing.
	gc(n.newCNIConfig(t.TempDir()), example10Without(t, n, "cniVersions"), []types.GCAttachment{})
	if got := n.heldLeases(); !slices.Equal(got, leases) {
		t.Errorf("IPAM holds %v after GC at 1.0.0, want %v (no GC sent)", got, leases)
	}

	// A nil list reaches the IPAM as "cni.dev/valid-attachments": null;
	// maclan-ipam takes that as no list (pkg/ipam/ipamconf: nil is not empty) and
	// releases nothing, where host-local would release every lease.
	gc(n.newCNIConfig(t.TempDir()), list, nil)
	if got := n.heldLeases(); !slices.Equal(got, leases) {
		t.Errorf("IPAM holds %v after GC with a null list, want %v", got, leases)
	}

	gc(n.newCNIConfig(t.TempDir()), list, []types.GCAttachment{})
	if got := n.heldLeases(); len(got) != 0 {
		t.Errorf("IPAM holds %v after GC with an empty list, want none", got)
	}
	for _, c := range []*netNS{c1, c2} {
		c.macvlan(t, "eth0") // GC releases leases only; the links die with their namespaces
	}
}

// example10With loads the example, changed by change, for n.
func example10With(t *testing.T, n *testNet, change func(raw map[string]any)) *libcni.NetworkConfigList {
	t.Helper()
	var raw map[string]any
	if err := json.Unmarshal(n.exampleList(example10).Bytes, &raw); err != nil {
		t.Fatal(err)
	}
	change(raw)
	b, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		t.Fatalf("changed example %s: %v", b, err)
	}
	return list
}

// example10Without loads the example without the top-level key.
func example10Without(t *testing.T, n *testNet, key string) *libcni.NetworkConfigList {
	t.Helper()
	return example10With(t, n, func(raw map[string]any) { delete(raw, key) })
}

func firstPlugin(t *testing.T, raw map[string]any) map[string]any {
	t.Helper()
	plugins, _ := raw["plugins"].([]any)
	if len(plugins) == 0 {
		t.Fatal("the example has no plugins")
	}
	p, ok := plugins[0].(map[string]any)
	if !ok {
		t.Fatalf("plugin 0 of the example is %T", plugins[0])
	}
	return p
}
