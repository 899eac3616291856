//go:build integration

package integration

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// What the kernel shows, read through netlink handles bound to a namespace,
// and what real traffic between the lab's namespaces does.

// settleTimeout bounds the wait for a kernel state that follows an event
// (an announcement reaching the gateway, DAD finishing). It only keeps a
// broken run from hanging; tests never measure time against it.
const settleTimeout = 10 * time.Second

// link returns the named link in n, failing t if it is missing.
func (n *netNS) link(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := n.nl.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s in %s: %v", name, n.name, err)
	}
	return l
}

// macvlan returns the named link in n as a macvlan, failing t otherwise.
func (n *netNS) macvlan(t *testing.T, name string) *netlink.Macvlan {
	t.Helper()
	l := n.link(t, name)
	mv, ok := l.(*netlink.Macvlan)
	if !ok {
		t.Fatalf("link %s in %s is a %s, want macvlan", name, n.name, l.Type())
	}
	return mv
}

// linkNames lists the names of the links in n.
func (n *netNS) linkNames(t *testing.T) []string {
	t.Helper()
	links, err := n.nl.LinkList()
	if err != nil {
		t.Fatalf("list links in %s: %v", n.name, err)
	}
	names := make([]string, 0, len(links))
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

// wantOnlyLoopback checks that a container namespace holds nothing but lo.
func wantOnlyLoopback(t *testing.T, n *netNS) {
	t.Helper()
	if names := n.linkNames(t); len(names) != 1 || names[0] != "lo" {
		t.Errorf("links in %s: got %v, want only [lo]", n.name, names)
	}
}

// addrs lists the global addresses of a link (family netlink.FAMILY_V4/V6).
func (n *netNS) addrs(t *testing.T, l netlink.Link, family int) []netlink.Addr {
	t.Helper()
	all, err := n.nl.AddrList(l, family)
	if err != nil {
		t.Fatalf("list addresses of %s in %s: %v", l.Attrs().Name, n.name, err)
	}
	var out []netlink.Addr
	for _, a := range all {
		if a.Scope == unix.RT_SCOPE_UNIVERSE {
			out = append(out, a)
		}
	}
	return out
}

// findAddr returns the address of l equal to cidr.
func (n *netNS) findAddr(t *testing.T, l netlink.Link, cidr string) (netlink.Addr, bool) {
	t.Helper()
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		for _, a := range n.addrs(t, l, fam) {
			if a.IPNet.String() == cidr {
				return a, true
			}
		}
	}
	return netlink.Addr{}, false
}

// wantDefaultRoute checks that n routes the family's default via gw on l.
func (n *netNS) wantDefaultRoute(t *testing.T, l netlink.Link, family int, gw string) {
	t.Helper()
	routes, err := n.nl.RouteList(l, family)
	if err != nil {
		t.Fatalf("list routes in %s: %v", n.name, err)
	}
	var seen []string
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			if r.Gw.String() == gw {
				return
			}
			seen = append(seen, fmt.Sprintf("default via %s", r.Gw))
		}
	}
	t.Errorf("default routes of %s in %s: got %v, want via %s", l.Attrs().Name, n.name, seen, gw)
}

// resultIPs returns the result's addresses as CIDR strings by family.
func resultIPs(t *testing.T, res *current.Result) (v4, v6 string) {
	t.Helper()
	for _, ipc := range res.IPs {
		if ipc.Address.IP.To4() != nil {
			v4 = ipc.Address.String()
		} else {
			v6 = ipc.Address.String()
		}
	}
	return v4, v6
}

// bareIP strips the prefix length of a CIDR.
func bareIP(cidr string) string {
	ip, _, err := net.ParseCIDR(cidr)
	if err != nil {
		return cidr
	}
	return ip.String()
}

// pingOnce sends one echo request from n to dst and waits a second for the
// reply.
func pingOnce(n *netNS, dst string) error {
	out, err := exec.Command("ip", "netns", "exec", n.name, "ping", "-n", "-q", "-c1", "-W1", dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from %s: %w: %s", dst, n.name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// pingSettled pings dst from n until an echo comes back or settleTimeout
// runs out.
func pingSettled(n *netNS, dst string) error {
	deadline := time.Now().Add(settleTimeout)
	for {
		err := pingOnce(n, dst)
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}

// wantPing checks that n reaches dst. A lost first echo (neighbour
// resolution, a port still learning) is retried until settleTimeout.
func wantPing(t *testing.T, n *netNS, dst string) {
	t.Helper()
	deadline := time.Now().Add(settleTimeout)
	for {
		err := pingOnce(n, dst)
		if err == nil {
			return
		}
		t.Logf("retrying: %v", err)
		if time.Now().After(deadline) {
			t.Errorf("%s cannot reach %s: %v", n.name, dst, err)
			return
		}
	}
}

// wantNoPing checks that n does not reach dst: two echoes, no reply.
func wantNoPing(t *testing.T, n *netNS, dst string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", n.name, "ping", "-n", "-q", "-c2", "-W1", dst).CombinedOutput()
	if err == nil {
		t.Errorf("%s reaches %s, want no reply: %s", n.name, dst, strings.TrimSpace(string(out)))
	}
}

// waitFor polls cond until it holds or settleTimeout passes; then it fails t
// with cond's last description of what it saw.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(settleTimeout)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: still %s", what, seen)
			return
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not a synchronisation
	}
}

// gwNeighbour returns the MAC that the gateway's neighbour table holds for
// ip, and whether it holds a usable entry at all.
func gwNeighbour(t *testing.T, ip string) (string, bool) {
	t.Helper()
	gw := theLab.gw.link(t, gwIf)
	target := net.ParseIP(ip)
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		neighs, err := theLab.gw.nl.NeighList(gw.Attrs().Index, fam)
		if err != nil {
			t.Fatalf("list gateway neighbours: %v", err)
		}
		for _, nb := range neighs {
			if !nb.IP.Equal(target) {
				continue
			}
			if nb.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) != 0 || len(nb.HardwareAddr) == 0 {
				return "", false
			}
			return nb.HardwareAddr.String(), true
		}
	}
	return "", false
}

// waitGwNeighbour waits until the gateway maps ip to mac.
func waitGwNeighbour(t *testing.T, ip, mac string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("gateway neighbour %s -> %s", ip, mac), func() (bool, string) {
		got, ok := gwNeighbour(t, ip)
		if !ok {
			return false, "no entry"
		}
		return got == mac, "mapped to " + got
	})
}

// flushGwNeighbours empties the gateway's neighbour table.
func flushGwNeighbours(t *testing.T) {
	t.Helper()
	theLab.ip(t, "-n", theLab.gw.name, "neigh", "flush", "dev", gwIf)
	theLab.ip(t, "-n", theLab.gw.name, "-6", "neigh", "flush", "dev", gwIf)
}

// wantSettled checks that no address of l is still tentative (DAD pending)
// or failed DAD.
func (n *netNS) wantSettled(t *testing.T, l netlink.Link) {
	t.Helper()
	for _, a := range n.addrs(t, l, netlink.FAMILY_V6) {
		if a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			t.Errorf("address %s of %s is still tentative right after ADD, want DAD done", a.IPNet, l.Attrs().Name)
		}
	}
}

// waitSettled waits until no IPv6 address of l is tentative, so that tests
// of something else can use them even with a plugin that does not wait.
func (n *netNS) waitSettled(t *testing.T, l netlink.Link) {
	t.Helper()
	waitFor(t, "IPv6 DAD on "+l.Attrs().Name, func() (bool, string) {
		for _, a := range n.addrs(t, l, netlink.FAMILY_V6) {
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				return false, a.IPNet.String() + " tentative"
			}
		}
		return true, ""
	})
}

// frameCapture is a packet socket on the gateway's interface: it sees the
// frames that reach the gateway.
type frameCapture struct{ fd int }

// captureAtGateway opens a capture for the rest of the test.
func captureAtGateway(t *testing.T) *frameCapture {
	t.Helper()
	idx := theLab.gw.link(t, gwIf).Attrs().Index
	var fd int
	err := theLab.gw.ns.Do(func(ns.NetNS) error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: idx})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) }) // nothing to undo
	// A short receive timeout lets the reader check its deadline.
	tv := unix.Timeval{Usec: 100_000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return &frameCapture{fd: fd}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// announcements counts, among the frames captured, the ARP frames from
// ip4 and the unsolicited neighbour advertisements (override set) for ip6
// that give mac. It reads until both counts reach want or settleTimeout
// passes.
func (c *frameCapture) announcements(t *testing.T, ip4, ip6 net.IP, mac net.HardwareAddr, want int) (arps, nas int) {
	t.Helper()
	buf := make([]byte, 2048)
	deadline := time.Now().Add(settleTimeout)
	for (arps < want || nas < want) && time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("capture: %v", err)
		}
		switch {
		case isARPFrom(buf[:n], ip4, mac):
			arps++
		case isUnsolicitedNA(buf[:n], ip6, mac):
			nas++
		}
	}
	return arps, nas
}

// isARPFrom: an ARP frame whose sender is ip at mac, which makes its
// receivers replace their entry for ip: a gratuitous ARP (target ip too)
// or a request to a neighbour such as the gateway (RFC 826's merge).
func isARPFrom(f []byte, ip net.IP, mac net.HardwareAddr) bool {
	const eth = 14
	if len(f) < eth+28 || binary.BigEndian.Uint16(f[12:]) != unix.ETH_P_ARP {
		return false
	}
	a := f[eth:]
	return bytes.Equal(a[8:14], mac) && net.IP(a[14:18]).Equal(ip)
}

// isUnsolicitedNA: an ICMPv6 neighbour advertisement for ip, solicited flag
// clear and override flag set, whose target link-layer address option is
// mac.
func isUnsolicitedNA(f []byte, ip net.IP, mac net.HardwareAddr) bool {
	const eth, ip6hdr = 14, 40
	if len(f) < eth+ip6hdr+24 || binary.BigEndian.Uint16(f[12:]) != unix.ETH_P_IPV6 {
		return false
	}
	p := f[eth:]
	if p[6] != unix.IPPROTO_ICMPV6 {
		return false
	}
	icmp := p[ip6hdr:]
	const typeNA, flagSolicited, flagOverride = 136, 0x40, 0x20
	if icmp[0] != typeNA || icmp[4]&flagSolicited != 0 || icmp[4]&flagOverride == 0 || !net.IP(icmp[8:24]).Equal(ip) {
		return false
	}
	for opts := icmp[24:]; len(opts) >= 8 && opts[1] > 0 && len(opts) >= int(opts[1])*8; opts = opts[int(opts[1])*8:] {
		if opts[0] == 2 { // target link-layer address
			return bytes.Equal(opts[2:8], mac)
		}
	}
	return false
}
