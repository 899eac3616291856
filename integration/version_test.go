//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types020 "github.com/containernetworking/cni/pkg/types/020"
	types040 "github.com/containernetworking/cni/pkg/types/040"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
)

// Every spec version from 0.1.0 to 1.1.0 gets a result of its own shape:
// ip4/ip6 before 0.3.0 (which the Mesos CNI isolator reads), ips and
// interfaces after; CHECK from 0.4.0 on.

func TestSpecVersions(t *testing.T) {
	for _, v := range []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			n := newNet(t)
			c := newContainer(t)
			verbs := versionedVerbs(t, n, c, v)
			res, err := verbs.add()
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if res.Version() != v {
				t.Errorf("result version %s, want %s", res.Version(), v)
			}
			l := c.macvlan(t, "eth0")
			v4, v6 := linkAddrs(t, c, l)
			switch r := res.(type) {
			case *types020.Result:
				wantV020(t, r, v4, v6)
			case *types040.Result:
				wantV040(t, r, c, v4, v6)
			case *current.Result:
				got, _ := resultIPs(t, r)
				if got != v4 {
					t.Errorf("result IPv4 %s, want %s", got, v4)
				}
				wantResultInterface(t, r, c, "eth0", l.Attrs().HardwareAddr.String())
			default:
				t.Fatalf("result of type %T for version %s", res, v)
			}
			if verbs.check != nil {
				if err := verbs.check(); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			for i := 1; i <= 2; i++ {
				if err := verbs.del(); err != nil {
					t.Errorf("DEL #%d: %v", i, err)
				}
			}
			wantOnlyLoopback(t, c)
			n.wantNoLeases()
		})
	}
}

type verbs struct {
	add   func() (types.Result, error)
	check func() error // nil before 0.4.0
	del   func() error
}

// versionedVerbs drives a single-plugin configuration before 0.3.0 (there
// were no lists then) and a list from 0.3.0 on.
func versionedVerbs(t *testing.T, n *testNet, c *netNS, v string) verbs {
	t.Helper()
	rt := &libcni.RuntimeConf{ContainerID: c.name, NetNS: c.path, IfName: "eth0"}
	inHost := func(fn func(ctx context.Context) error) error {
		return theLab.inHost(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
			defer cancel()
			return fn(ctx)
		})
	}
	if strings.HasPrefix(v, "0.1.") || strings.HasPrefix(v, "0.2.") {
		conf := n.mainConf()
		conf["cniVersion"] = v
		conf["name"] = n.name
		b, err := json.Marshal(conf)
		if err != nil {
			t.Fatal(err)
		}
		pc, err := libcni.NetworkPluginConfFromBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		vb := verbs{
			add: func() (res types.Result, err error) {
				err = inHost(func(ctx context.Context) error {
					res, err = n.cni.AddNetwork(ctx, pc, rt)
					return err
				})
				return res, err
			},
			del: func() error {
				return inHost(func(ctx context.Context) error { return n.cni.DelNetwork(ctx, pc, rt) })
			},
		}
		t.Cleanup(func() { _ = vb.del() }) // after a failed test; errors are the test's business
		return vb
	}
	a := n.attach(n.list(v, n.mainConf()), c, "eth0")
	vb := verbs{add: a.add, del: a.del}
	if v != "0.3.0" && v != "0.3.1" {
		vb.check = a.check
	}
	return vb
}

// linkAddrs returns the link's global IPv4 and IPv6 addresses.
func linkAddrs(t *testing.T, c *netNS, l netlink.Link) (v4, v6 string) {
	t.Helper()
	if a := c.addrs(t, l, netlink.FAMILY_V4); len(a) == 1 {
		v4 = a[0].IPNet.String()
	} else {
		t.Errorf("link has IPv4 addresses %v, want one", a)
	}
	if a := c.addrs(t, l, netlink.FAMILY_V6); len(a) == 1 {
		v6 = a[0].IPNet.String()
	} else {
		t.Errorf("link has IPv6 addresses %v, want one", a)
	}
	return v4, v6
}

func wantV020(t *testing.T, r *types020.Result, v4, v6 string) {
	t.Helper()
	if r.IP4 == nil || r.IP6 == nil {
		t.Fatalf("0.2.0 result ip4 %v ip6 %v, want both", r.IP4, r.IP6)
	}
	if got := r.IP4.IP.String(); got != v4 {
		t.Errorf("ip4.ip %s, want %s", got, v4)
	}
	if got := r.IP4.Gateway.String(); got != gw4 {
		t.Errorf("ip4.gateway %s, want %s", got, gw4)
	}
	if got := r.IP6.IP.String(); got != v6 {
		t.Errorf("ip6.ip %s, want %s", got, v6)
	}
	if got := r.IP6.Gateway.String(); got != gw6 {
		t.Errorf("ip6.gateway %s, want %s", got, gw6)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ip4", "ip6"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("0.2.0 result %s lacks %q", b, k)
		}
	}
}

func wantV040(t *testing.T, r *types040.Result, c *netNS, v4, v6 string) {
	t.Helper()
	seen := map[string]string{}
	for _, ipc := range r.IPs {
		seen[ipc.Version] = ipc.Address.String()
		if ipc.Interface == nil || *ipc.Interface >= len(r.Interfaces) || r.Interfaces[*ipc.Interface].Name != "eth0" {
			t.Errorf("result IP %s does not point at eth0", ipc.Address.String())
		}
	}
	if seen["4"] != v4 || seen["6"] != v6 {
		t.Errorf("result IPs by version %v, want 4: %s, 6: %s", seen, v4, v6)
	}
	for _, i := range r.Interfaces {
		if i.Name == "eth0" && i.Sandbox != c.path {
			t.Errorf("result eth0 sandbox %q, want %q", i.Sandbox, c.path)
		}
	}
}
