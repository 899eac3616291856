//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/maclan-cni/maclan/pkg/ipam/store/etcdtest"
)

// TestCnitoolEtcdStore: with 50-maclan-etcd.conflist, maclan-ipam keeps its
// leases in etcd, one address space shared by every host that names the
// same endpoints. The example's etcd is a server on the LAN at the gateway's
// address; the test runs one there (Debian's etcd-server), attaches two
// containers through cnitool, and reads the leases back with
// `maclan-ipam ls --etcd-endpoints`.
func TestCnitoolEtcdStore(t *testing.T) {
	if ipamType != "maclan-ipam" {
		t.Skip("the etcd store is maclan-ipam's")
	}
	var conf struct {
		Plugins []struct {
			IPAM struct {
				Store struct {
					Endpoints []string `json:"endpoints"`
					Prefix    string   `json:"prefix"`
				} `json:"store"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(readExample(t, "50-maclan-etcd.conflist")), &conf); err != nil {
		t.Fatal(err)
	}
	if len(conf.Plugins) != 1 || len(conf.Plugins[0].IPAM.Store.Endpoints) != 1 {
		t.Fatalf("50-maclan-etcd.conflist: want one plugin with one etcd endpoint in ipam.store, got %+v", conf)
	}
	endpoint, prefix := conf.Plugins[0].IPAM.Store.Endpoints[0], conf.Plugins[0].IPAM.Store.Prefix
	// Started first, so that it stops last, after the containers' cleanup DELs.
	etcdtest.Start(t, etcdtest.Options{
		ClientAddr: strings.TrimPrefix(endpoint, "http://"),
		PeerAddr:   "127.0.0.1:2380",
		Wrap:       []string{"ip", "netns", "exec", theLab.gw.name},
		Health:     func(url string) error { return etcdHealthFrom(theLab.gw, url) },
	})
	n, list, c1 := cnitoolExample(t, "50-maclan-etcd.conflist")

	r1 := cnitoolAdd(t, n, list, c1)
	c2 := newContainer(t)
	t.Cleanup(func() {
		if _, err := n.cnitool(list, "del", c2, n.env...); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	r2 := cnitoolAdd(t, n, list, c2)
	a1, _ := resultIPs(t, r1)
	a2, _ := resultIPs(t, r2)
	if a1 == a2 {
		t.Errorf("both containers got %s", a1)
	}
	wantPing(t, c1, bareIP(a2))
	if got := etcdLeases(t, n, endpoint, prefix); len(got) != 4 {
		t.Errorf("maclan-ipam ls (etcd) after two ADDs: %v, want 4 leases (IPv4 and IPv6 of each)", got)
	}
	cnitoolCheckDel(t, n, list, c1)
	cnitoolCheckDel(t, n, list, c2)
	if got := etcdLeases(t, n, endpoint, prefix); len(got) != 0 {
		t.Errorf("maclan-ipam ls (etcd) after DEL: %v, want none", got)
	}
}

// etcdHealthFrom asks etcd's /health from inside n, where the server
// listens.
func etcdHealthFrom(n *netNS, url string) error {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := n.ns.Do(func(ns.NetNS) error {
				var err error
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(url + "/health")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body) // a short read shows in the check below
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
		return fmt.Errorf("etcd health: %s %s", resp.Status, body)
	}
	return nil
}

// etcdLeases lists the network's leases in etcd with `maclan-ipam ls`, run in
// the lab host namespace, which reaches the server over the LAN.
func etcdLeases(t *testing.T, n *cnitoolNet, endpoint, prefix string) []map[string]any {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", theLab.host.name,
		filepath.Join(theLab.binDir, "maclan-ipam"), "ls", "--etcd-endpoints", endpoint, "--etcd-prefix", prefix,
		"--network", n.name, "-o", "json")
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("maclan-ipam ls --etcd-endpoints %s: %v: %s", endpoint, err, out)
	}
	var rows []map[string]any
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("maclan-ipam ls output %s: %v", out, err)
	}
	return rows
}
