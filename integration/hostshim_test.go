//go:build integration

package integration

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
)

// shimHeld returns the host shim's global addresses, read from the kernel.
func shimHeld(t *testing.T) []netip.Addr {
	t.Helper()
	shim := theLab.host.link(t, "shim-"+masterIf)
	var out []netip.Addr
	for _, a := range theLab.host.addrs(t, shim, netlink.FAMILY_ALL) {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && !ip.Unmap().IsLinkLocalUnicast() {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// shimRoutes lists the destinations of the routes the shim added.
func shimRoutes(t *testing.T) []string {
	t.Helper()
	routes, err := theLab.host.nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: 0x6d}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	var dst []string
	for _, r := range routes {
		dst = append(dst, r.Dst.IP.String())
	}
	return dst
}

// newShimNet is a network whose host shim takes its addresses from the IPAM.
func newShimNet(t *testing.T, cniVersion string) (*testNet, *libcni.NetworkConfigList) {
	t.Helper()
	if pluginType != "maclan" {
		t.Skip("the host shim is maclan's")
	}
	t.Cleanup(func() { _ = os.RemoveAll(shimState()) })
	n := newNet(t)
	conf := n.mainConf()
	conf["hostShim"] = map[string]any{"enabled": true}
	return n, n.list(cniVersion, conf)
}

// The shim takes its addresses from the network's IPAM, one per range set,
// as an attachment of its own: `ls` shows it, GC keeps it, and the last DEL
// gives it back. With a dual-stack network the host reaches its containers
// over IPv4 and IPv6.
func TestHostShimAddressFromIPAM(t *testing.T) {
	n, list := newShimNet(t, "1.1.0")

	a1 := n.attach(list, newContainer(t), "eth0")
	v4a, v6a := resultIPs(t, a1.mustAdd())
	a2 := n.attach(list, newContainer(t), "eth0")
	v4b, v6b := resultIPs(t, a2.mustAdd())

	held := shimHeld(t)
	if len(held) != 2 || held[0].Is4() == held[1].Is4() {
		t.Fatalf("shim holds %v, want one IPv4 and one IPv6 address from the IPAM", held)
	}
	var shimOwned []string
	for _, row := range n.lsLeases() {
		if row["containerID"] == "maclan-hostshim-"+masterIf {
			shimOwned = append(shimOwned, row["ip"].(string))
		}
	}
	slices.Sort(shimOwned)
	want := []string{held[0].String(), held[1].String()}
	slices.Sort(want)
	if !slices.Equal(shimOwned, want) {
		t.Errorf("maclan-ipam ls shows the shim's attachment holding %v, want the shim's addresses %v", shimOwned, want)
	}
	for _, ip := range []string{v4a, v6a, v4b, v6b} {
		if slices.Contains(want, bareIP(ip)) {
			t.Errorf("a container got the shim's address %s", ip)
		}
		wantPing(t, theLab.host, bareIP(ip))
	}
	for _, ip := range held {
		wantPing(t, a1.ctr, ip.String())
	}

	// GC with the runtime's attachments: the shim's lease is not among
	// them, and is kept all the same.
	gc := func(valid ...*attachment) {
		t.Helper()
		var attachments []types.GCAttachment
		for _, a := range valid {
			attachments = append(attachments, types.GCAttachment{ContainerID: a.rt.ContainerID, IfName: a.rt.IfName})
		}
		if err := theLab.inHost(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
			defer cancel()
			return n.newCNIConfig(t.TempDir()).GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: attachments})
		}); err != nil {
			t.Fatalf("GC: %v", err)
		}
	}
	gc(a1, a2)
	if got := len(n.heldLeases()); got != 6 {
		t.Errorf("after GC with both containers valid the IPAM holds %d addresses, want 6 (2 containers and the shim, dual stack)", got)
	}
	if err := a1.check(); err != nil {
		t.Errorf("CHECK: %v", err)
	}

	for _, a := range []*attachment{a1, a2} {
		if err := a.del(); err != nil {
			t.Fatalf("DEL: %v", err)
		}
	}
	if names := theLab.host.linkNames(t); slices.Contains(names, "shim-"+masterIf) {
		t.Errorf("host links after the last DEL: %v, want no shim", names)
	}
	if r := shimRoutes(t); len(r) != 0 {
		t.Errorf("shim routes left after the last DEL: %v", r)
	}
	n.wantNoLeases()
	if _, err := os.Stat(filepath.Join(shimState(), masterIf+".lease")); !os.IsNotExist(err) {
		t.Errorf("the shim's lease record is still there after the last DEL (stat: %v)", err)
	}
}

// Concurrent ADDs and DELs on one master see one consistent shim: every
// container gets its route, and the last DEL, whichever it is, removes the
// shim and gives its address back.
func TestHostShimConcurrentAddDel(t *testing.T) {
	n, list := newShimNet(t, "1.0.0")

	const count = 8
	atts := make([]*attachment, count)
	for i := range atts {
		atts[i] = n.attach(list, newContainer(t), "eth0")
		atts[i].ensureCleanup() // registered here: t.Cleanup is not for other goroutines' use
	}
	var wg sync.WaitGroup
	errs := make([]error, count)
	ips := make([][2]string, count)
	for i, a := range atts {
		wg.Go(func() {
			res, err := a.add()
			if errs[i] = err; err != nil {
				return
			}
			cur, err := current.NewResultFromResult(res)
			if errs[i] = err; err == nil {
				for _, ipc := range cur.IPs {
					if ipc.Address.IP.To4() != nil {
						ips[i][0] = ipc.Address.IP.String()
					} else {
						ips[i][1] = ipc.Address.IP.String()
					}
				}
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent ADD %d: %v", i, err)
		}
	}
	routes := shimRoutes(t)
	for _, p := range ips {
		for _, ip := range p {
			if !slices.Contains(routes, ip) {
				t.Errorf("no shim route to %s after the concurrent ADDs (routes %v)", ip, routes)
			}
		}
		wantPing(t, theLab.host, p[0])
	}
	if held := shimHeld(t); len(held) != 2 {
		t.Errorf("shim holds %v after %d concurrent ADDs, want one address per family", held, count)
	}

	for i, a := range atts {
		wg.Go(func() { errs[i] = a.del() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent DEL %d: %v", i, err)
		}
	}
	if names := theLab.host.linkNames(t); slices.Contains(names, "shim-"+masterIf) {
		t.Errorf("host links after the concurrent DELs: %v, want no shim", names)
	}
	if r := shimRoutes(t); len(r) != 0 {
		t.Errorf("shim routes left after the concurrent DELs: %v", r)
	}
	n.wantNoLeases()
}
