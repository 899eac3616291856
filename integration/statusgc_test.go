//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

// STATUS and GC (spec 1.1.0): both are forwarded to the IPAM; STATUS fails
// with code 50 when the master is missing or down.

func TestStatus(t *testing.T) {
	n := newNet(t)
	spy, calls := n.spyIPAM()
	statusOf := func(master string) error {
		conf := n.mainConf()
		conf["master"] = master
		conf["ipam"].(map[string]any)["type"] = spy
		list := n.list("1.1.0", conf)
		return theLab.inHost(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
			defer cancel()
			return n.cni.GetStatusNetworkList(ctx, list)
		})
	}

	if err := statusOf(spareIf); err != nil {
		t.Errorf("STATUS with %s up: %v", spareIf, err)
	}
	if !slices.ContainsFunc(calls(), func(c spyCall) bool { return c.command == "STATUS" }) {
		t.Errorf("the IPAM got calls %v, want a STATUS", calls())
	}

	theLab.ip(t, "-n", theLab.host.name, "link", "set", spareIf, "down")
	t.Cleanup(func() { theLab.ip(t, "-n", theLab.host.name, "link", "set", spareIf, "up") })
	err := statusOf(spareIf)
	t.Logf("STATUS with %s down: %v", spareIf, err)
	wantCNIError(t, err, types.ErrPluginNotAvailable, spareIf)

	err = statusOf("nosuch0")
	t.Logf("STATUS with no master: %v", err)
	wantCNIError(t, err, types.ErrPluginNotAvailable, "nosuch0")
}

func TestGC(t *testing.T) {
	n := newNet(t)
	spy, calls := n.spyIPAM()
	conf := n.mainConf()
	conf["ipam"].(map[string]any)["type"] = spy
	list := n.list("1.1.0", conf)
	c1, c2 := newContainer(t), newContainer(t)
	r1 := n.attach(list, c1, "eth0").mustAdd()
	n.attach(list, c2, "eth0").mustAdd()
	if got := n.heldLeases(); len(got) != 4 {
		t.Fatalf("IPAM holds %v, want 4 addresses", got)
	}

	// A fresh libcni cache: libcni then sends only GC, not the DELs it
	// would issue itself for cached attachments missing from the list.
	gc := n.newCNIConfig(t.TempDir())
	err := theLab.inHost(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
		defer cancel()
		return gc.GCNetworkList(ctx, list, &libcni.GCArgs{
			ValidAttachments: []types.GCAttachment{{ContainerID: c1.name, IfName: "eth0"}},
		})
	})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}

	// The IPAM got the GC with the valid attachments...
	i := slices.IndexFunc(calls(), func(c spyCall) bool { return c.command == "GC" })
	if i < 0 {
		t.Fatalf("the IPAM got calls %v, want a GC", calls())
	}
	var gcConf struct {
		Valid []types.GCAttachment `json:"cni.dev/valid-attachments"`
	}
	if err := json.Unmarshal([]byte(calls()[i].conf), &gcConf); err != nil {
		t.Fatalf("GC configuration the IPAM got: %v", err)
	}
	want := []types.GCAttachment{{ContainerID: c1.name, IfName: "eth0"}}
	if !slices.Equal(gcConf.Valid, want) {
		t.Errorf("IPAM GC valid attachments %v, want %v", gcConf.Valid, want)
	}
	// ...and released c2's addresses, keeping c1's.
	v4, v6 := resultIPs(t, r1)
	wantLeases := []string{bareIP(v4), bareIP(v6)}
	slices.Sort(wantLeases)
	if got := n.heldLeases(); !slices.Equal(got, wantLeases) {
		t.Errorf("IPAM holds %v after GC, want c1's %v", got, wantLeases)
	}
	wantPing(t, c1, gw4)
}
