package doctor

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/maclan-cni/maclan/pkg/ipam/iprange"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/nldump"
	"github.com/maclan-cni/maclan/pkg/shim"
)

// checkHostReach: a macvlan's frames never reach its own master, so the
// host cannot talk to its containers unless it has a macvlan of its own on
// the master (hostShim). With one, it pings a leased container address.
func checkHostReach(h netlinksafe.Handle, t *target, master netlink.Link, leases []store.Lease) Result {
	name := master.Attrs().Name
	if !t.conf.ShimEnabled() {
		return warn("host-reach", `set "hostShim": {"enabled": true} if the host must talk to its containers`,
			"no hostShim: the host cannot reach containers on %s (a macvlan's traffic never reaches its own master)", name)
	}
	shimName := shim.Name(name)
	if _, err := h.LinkByName(shimName); err != nil {
		if len(containerLeases(leases)) == 0 {
			return ok("host-reach", "hostShim is set; %s comes with the first container", shimName)
		}
		return fail("host-reach", "re-run a container's ADD (or CHECK) to re-create it, and look for a tool that deletes unknown interfaces",
			"hostShim is set and containers are attached, but %s is missing: %v", shimName, err)
	}
	ip, found := reachTarget(h, leases)
	if !found {
		return ok("host-reach", "hostShim %s is in place; no leased container address to ping", shimName)
	}
	if err := ping(ip, time.Second); err != nil {
		return fail("host-reach", fmt.Sprintf("check the route to %s (ip route get %s: it must go via %s) and the container's firewall", ip, ip, shimName),
			"hostShim %s is in place but the host does not reach the container address %s: %v", shimName, ip, err)
	}
	return ok("host-reach", "hostShim %s is in place and the host reaches the container address %s", shimName, ip)
}

// containerLeases are the leases that hold a container (not a conflict
// marker).
func containerLeases(leases []store.Lease) []store.Lease {
	var out []store.Lease
	for _, l := range leases {
		if l.Conflict == "" {
			out = append(out, l)
		}
	}
	return out
}

// reachTarget picks a leased IPv4 address (else IPv6) that is not one of
// the host's own (the shim's own lease).
func reachTarget(h netlinksafe.Handle, leases []store.Lease) (netip.Addr, bool) {
	own := hostAddrs(h)
	var v6 netip.Addr
	for _, l := range containerLeases(leases) {
		if _, mine := own[l.IP]; mine {
			continue
		}
		if l.IP.Is4() {
			return l.IP, true
		}
		if !v6.IsValid() {
			v6 = l.IP
		}
	}
	return v6, v6.IsValid()
}

// hostAddrs maps each address of the host namespace to its interface.
func hostAddrs(h netlinksafe.Handle) map[netip.Addr]string {
	out := map[netip.Addr]string{}
	links, err := h.LinkList()
	if err != nil {
		return out
	}
	for _, l := range links {
		addrs, err := nldump.AddrList(h, l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				out[ip.Unmap()] = l.Attrs().Name
			}
		}
	}
	return out
}

// ping sends ICMP echo requests (RFC 792; RFC 4443 section 4.1) to ip from
// the host namespace and waits for a reply.
func ping(ip netip.Addr, wait time.Duration) error {
	family, proto, req := unix.AF_INET, unix.IPPROTO_ICMP, byte(8)
	var sa unix.Sockaddr = &unix.SockaddrInet4{Addr: ip.As4()}
	if ip.Is6() {
		family, proto, req = unix.AF_INET6, unix.IPPROTO_ICMPV6, 128
		sa = &unix.SockaddrInet6{Addr: ip.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return fmt.Errorf("ICMP socket: %w", err)
	}
	defer unix.Close(fd)
	id := uint16(os.Getpid())
	msg := []byte{req, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'm', 'a', 'c', 'l', 'a', 'n'}
	if ip.Is4() {
		c := inetChecksum(msg) // the kernel computes ICMPv6's
		msg[2], msg[3] = byte(c>>8), byte(c)
	}
	end := time.Now().Add(wait)
	buf := make([]byte, 1500)
	for tries := 0; tries < 3; tries++ {
		if err := unix.Sendto(fd, msg, 0, sa); err != nil {
			return fmt.Errorf("send echo request: %w", err)
		}
		slot := time.Now().Add(wait / 3)
		for time.Now().Before(slot) && time.Now().Before(end) {
			n, _ := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(time.Until(slot).Milliseconds())+1)
			if n <= 0 {
				continue
			}
			nr, from, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
			if err != nil {
				continue
			}
			if isEchoReply(buf[:nr], from, ip, id) {
				return nil
			}
		}
	}
	return errors.New("no echo reply")
}

func isEchoReply(b []byte, from unix.Sockaddr, ip netip.Addr, id uint16) bool {
	switch f := from.(type) {
	case *unix.SockaddrInet4:
		if netip.AddrFrom4(f.Addr) != ip || len(b) < 20 {
			return false
		}
		b = b[int(b[0]&0xf)*4:] // a raw IPv4 socket returns the IP header
		return len(b) >= 8 && b[0] == 0 && uint16(b[4])<<8|uint16(b[5]) == id
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(f.Addr) == ip && len(b) >= 8 && b[0] == 129 && uint16(b[4])<<8|uint16(b[5]) == id
	}
	return false
}

// inetChecksum is the Internet checksum (RFC 1071).
func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// checkOverlap: an address of the host inside a range is an address the
// IPAM may hand to a container, which then fights the host for it. The
// shim's own addresses are leased from the range on purpose and are left
// out, as are excluded addresses.
func checkOverlap(own map[netip.Addr]string, t *target, shimName string) Result {
	for ip, dev := range own {
		if dev == shimName || ip.IsLinkLocalUnicast() || ip.IsLoopback() {
			continue
		}
		for _, set := range t.ipam.Ranges {
			i := set.RangeFor(ip)
			if i < 0 {
				continue
			}
			if ex, _ := iprange.Excluded(ip, t.ipam.ExcludedPrefixes()); ex || set[i].Reserved(ip) {
				continue
			}
			return fail("overlap", fmt.Sprintf("add %s to \"ipam.exclude\", or move the range off the host's addresses", ip),
				"the host's address %s (%s) lies in the range %s: the IPAM may hand it to a container", ip, dev, set[i])
		}
	}
	return ok("overlap", "no address of the host lies in the ranges")
}

// sysctl reads a value under /proc/sys/net of the host namespace.
func sysctl(procSys, key string) (int, error) {
	b, err := os.ReadFile(filepath.Join(procSys, key))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// effective returns max(all, dev), the rule the kernel applies to
// rp_filter and arp_ignore (Documentation/networking/ip-sysctl.rst).
func effective(procSys, key, dev string) int {
	all, _ := sysctl(procSys, "ipv4/conf/all/"+key) // unreadable: counts as 0, the default
	own, _ := sysctl(procSys, "ipv4/conf/"+dev+"/"+key)
	return max(all, own)
}

// checkSysctls looks for the settings that break a macvlan network:
// strict reverse-path filtering where a container's packets reach the host
// on an interface other than the one its route names; the master answering
// ARP for the shim's address; IPv6 off where the network has IPv6 ranges.
func checkSysctls(h netlinksafe.Handle, procSys string, t *target, master string, leases []store.Lease) []Result {
	shimOn := t.conf.ShimEnabled()
	shimName := shim.Name(master)
	var rs []Result
	switch rp := effective(procSys, "rp_filter", shimName); {
	case !shimOn:
		rs = append(rs, ok("rp_filter", "not in the way: without hostShim no container traffic reaches the host"))
	case rp != 1:
		rs = append(rs, ok("rp_filter", "%s has rp_filter %d (not strict)", shimName, rp))
	default:
		if ip, bad := routeNotVia(h, shimName, leases); bad {
			rs = append(rs, warn("rp_filter", fmt.Sprintf("sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.%s.rp_filter=2 (loose), or restore the host route of %s via %s", shimName, ip, shimName),
				"strict rp_filter on %s, and the route to the container %s does not go via %s: its packets are dropped", shimName, ip, shimName))
		} else {
			rs = append(rs, ok("rp_filter", "strict on %s, and every container route goes via it", shimName))
		}
	}
	rs = append(rs, checkARPIgnore(procSys, shimOn, shimName, master))
	return append(rs, checkIPv6(procSys, t, master, shimOn))
}

// checkARPIgnore: a container's ARP request for the host's address on the
// master reaches the shim (macvlan bridge mode) and the wire, never the
// master itself, which does not receive what its own macvlans send. Only
// the shim can answer it, for an address it does not hold itself, which
// arp_ignore 0 allows and 1 or more forbids (ip-sysctl.rst, arp_ignore).
func checkARPIgnore(procSys string, shimOn bool, shimName, master string) Result {
	if !shimOn {
		return ok("arp_ignore", "not in the way: without hostShim no container talks to the host")
	}
	ai := effective(procSys, "arp_ignore", shimName)
	if ai == 0 {
		return ok("arp_ignore", "0 on %s: containers reach every address of the host through the shim", shimName)
	}
	return warn("arp_ignore", fmt.Sprintf("sysctl -w net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.%s.arp_ignore=0", shimName),
		"arp_ignore %d on %s: containers reach the host only at the shim's own address, not at %s's (no one answers their ARP for it)", ai, shimName, master)
}

func checkIPv6(procSys string, t *target, master string, shimOn bool) Result {
	has6 := false
	for _, set := range t.ipamRanges() {
		has6 = has6 || !set.Is4()
	}
	if !has6 {
		return ok("ipv6", "the network has no IPv6 range")
	}
	if _, err := os.Stat(filepath.Join(procSys, "ipv6")); err != nil {
		return fail("ipv6", "remove ipv6.disable=1 from the kernel command line, or drop the IPv6 ranges",
			"the network has IPv6 ranges but the kernel has no IPv6 (booted with ipv6.disable=1?)")
	}
	all, _ := sysctl(procSys, "ipv6/conf/all/disable_ipv6") // unreadable: 0, the default
	own, _ := sysctl(procSys, "ipv6/conf/"+master+"/disable_ipv6")
	if (all == 1 || own == 1) && shimOn {
		return fail("ipv6", fmt.Sprintf("sysctl -w net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.%s.disable_ipv6=0", master),
			"IPv6 is disabled on the host (all %d, %s %d): the host shim cannot reach the containers' IPv6 addresses", all, master, own)
	}
	if all == 1 || own == 1 {
		return ok("ipv6", "IPv6 is disabled on the host's %s; containers have their own and are not affected", master)
	}
	return ok("ipv6", "IPv6 is enabled on %s", master)
}

// routeNotVia returns a leased container address whose route in the host
// namespace does not go out of dev.
func routeNotVia(h netlinksafe.Handle, dev string, leases []store.Lease) (netip.Addr, bool) {
	link, err := h.LinkByName(dev)
	if err != nil {
		return netip.Addr{}, false
	}
	own := hostAddrs(h)
	for _, l := range containerLeases(leases) {
		if _, mine := own[l.IP]; mine || !l.IP.Is4() {
			continue
		}
		routes, err := h.RouteGet(net.IP(l.IP.AsSlice()))
		if err == nil && len(routes) > 0 && routes[0].LinkIndex != link.Attrs().Index {
			return l.IP, true
		}
	}
	return netip.Addr{}, false
}

func shimName(master string) string { return shim.Name(master) }
