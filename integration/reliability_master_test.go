//go:build integration

package integration

import (
	"context"

	"github.com/containernetworking/cni/libcni"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// TestReliabilityMasterFaults takes a master of the test's own (a veth port
// on the switch, so the lab's eth0 and the other tests are undisturbed)
// down and away between ADDs: ADD fails clearly and leaves nothing, DEL
// still cleans up, STATUS reports code 50, and everything works again once
// the master is back.
func TestReliabilityMasterFaults(t *testing.T) {
	const master, port = "eth8", "p-mf"
	host := theLab.host.name
	extraMaster(t, master, port)

	n := newNet(t)
	conf := n.mainConf()
	conf["master"] = master
	list := n.list("1.1.0", conf)
	status := func() error {
		return theLab.inHost(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
			defer cancel()
			return n.cni.GetStatusNetworkList(ctx, list)
		})
	}
	wantWorks := func(t *testing.T) *attachment {
		t.Helper()
		if err := status(); err != nil {
			t.Errorf("STATUS with %s up: %v", master, err)
		}
		c := newContainer(t)
		a := n.attach(list, c, "eth0")
		a.mustAdd()
		wantPing(t, c, gw4)
		return a
	}
	// wantAddFails: ADD fails with a message naming the master and leaves
	// neither a link nor a lease; STATUS says 50.
	wantAddFails := func(t *testing.T, list *libcni.NetworkConfigList, code uint) {
		t.Helper()
		err := status()
		t.Logf("STATUS: %v", err)
		wantCNIError(t, err, types.ErrPluginNotAvailable, master)
		before := n.heldLeases()
		c := newContainer(t)
		_, err = n.attach(list, c, "eth0").add()
		t.Logf("ADD: %v", err)
		if err == nil {
			t.Fatalf("ADD with master %s unusable succeeded", master)
		}
		if code != 0 {
			wantCNIError(t, err, code, master)
		} else {
			wantErrorMentions(t, err, master)
		}
		wantOnlyLoopback(t, c)
		if got := n.heldLeases(); len(got) != len(before) {
			t.Errorf("leases after the failed ADD: %v, want %v as before", got, before)
		}
	}

	t.Run("down", func(t *testing.T) {
		a := wantWorks(t)
		theLab.ip(t, "-n", host, "link", "set", master, "down")
		t.Cleanup(func() { theLab.ip(t, "-n", host, "link", "set", master, "up") })
		err := status()
		t.Logf("STATUS: %v", err)
		wantCNIError(t, err, types.ErrPluginNotAvailable, master)
		if err := a.del(); err != nil {
			t.Errorf("DEL with the master down: %v", err)
		}
		wantOnlyLoopback(t, a.ctr)
		n.wantNoLeases()
		theLab.ip(t, "-n", host, "link", "set", master, "up")
		if err := wantWorks(t).del(); err != nil {
			t.Errorf("DEL: %v", err)
		}
		n.wantNoLeases()
	})

	// With the master down, ADD fails at once with code 11 naming the
	// master, before it makes a link (it used to succeed single stack, and
	// to fail dual stack only after the 10 s DAD time-out).
	for _, tc := range []struct {
		name string
		sets int
	}{{"down: ADD fails clearly, dual stack", 2}, {"down: ADD fails clearly, IPv4 only", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			c := n.mainConf()
			c["master"] = master
			ipam := c["ipam"].(map[string]any)
			ipam["ranges"] = ipam["ranges"].([]any)[:tc.sets]
			theLab.ip(t, "-n", host, "link", "set", master, "down")
			t.Cleanup(func() { theLab.ip(t, "-n", host, "link", "set", master, "up") })
			wantAddFails(t, n.list("1.1.0", c), types.ErrTryAgainLater)
		})
	}
	t.Run("deleted", func(t *testing.T) {
		a := wantWorks(t)
		theLab.ip(t, "-n", theLab.sw.name, "link", "del", port) // takes the master, and the container's macvlan, with it
		wantOnlyLoopback(t, a.ctr)
		wantAddFails(t, list, types.ErrInvalidNetworkConfig)
		if err := a.del(); err != nil {
			t.Errorf("DEL with the master gone: %v", err)
		}
		n.wantNoLeases()

		extraMaster(t, master, port)
		if err := wantWorks(t).del(); err != nil {
			t.Errorf("DEL: %v", err)
		}
		n.wantNoLeases()
	})
	if mv := hostMacvlans(t); len(mv) != 0 {
		t.Errorf("macvlans left in the host namespace: %v", mv)
	}
}
