package ifconfig

import (
	"fmt"
	"net"
	"slices"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// announce tells the LAN that the addresses of ips now live at the link's
// MAC, so that neighbours (the gateway first) replace stale cache entries at
// once instead of after their reachable time runs out.
//
// IPv4 is left to the kernel, which sends nothing through a packet socket
// of ours: a packet socket's close waits for an RCU grace period
// (packet_release calls synchronize_net), 7-15 ms here, most of an ADD.
// With arp_notify set before the link came up, the kernel has broadcast a
// gratuitous ARP for every address (RFC 5227, section 2.3); here it is
// also asked to resolve each gateway (a neighbour entry with NTF_USE),
// which broadcasts an ARP request from the new address and MAC: the
// gateway, the target, replaces its entry for the address (RFC 826's
// merge, Linux's neigh_event_ns with override), and other hosts refresh an
// entry they hold. So two frames announce each address, and the gateway
// has learnt the MAC before the ADD returns.
//
// IPv6 gets count unsolicited neighbour advertisements with the override
// flag (RFC 4861, section 7.2.6) through raw ICMPv6 sockets, which close
// without a grace period.
func announce(h netlinksafe.Handle, link netlink.Link, ips []*current.IPConfig, count int) error {
	if count <= 0 {
		return nil
	}
	mac := link.Attrs().HardwareAddr
	idx := link.Attrs().Index
	resolveGateways(h, idx, ips)
	for i := 0; i < count; i++ {
		for _, ipc := range ips {
			if ipc.Address.IP.To4() != nil {
				continue
			}
			if err := sendUnsolicitedNA(idx, mac, ipc.Address.IP); err != nil {
				return fmt.Errorf("announce %s on %q: %w", ipc.Address.IP, link.Attrs().Name, err)
			}
		}
	}
	return nil
}

// maxResolvedGateways bounds the gateways resolved by one ADD: a network
// has one or two; hundreds of range sets (a hostile configuration) must
// not fill the container's neighbour table.
const maxResolvedGateways = 4

// resolveGateways asks the kernel to resolve each IPv4 gateway of ips from
// the link (see announce). Best effort: the addresses are configured and
// the kernel's gratuitous ARP has gone out; a gateway that cannot be asked
// now learns the MAC from the container's first packet.
func resolveGateways(h netlinksafe.Handle, idx int, ips []*current.IPConfig) {
	var done []net.IP
	for _, ipc := range ips {
		gw := ipc.Gateway.To4()
		if ipc.Address.IP.To4() == nil || gw == nil || len(done) == maxResolvedGateways ||
			slices.ContainsFunc(done, gw.Equal) {
			continue
		}
		done = append(done, gw)
		_ = h.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, IP: gw, Flags: netlink.NTF_USE}) // best effort, above
	}
}

// unsolicitedNA builds an ICMPv6 neighbour advertisement for target with
// the override flag set and solicited clear, carrying the target link-layer
// address option (RFC 4861, sections 4.4 and 4.6.1). The kernel fills in
// the checksum of ICMPv6 raw sockets (RFC 3542, section 3.1).
func unsolicitedNA(mac net.HardwareAddr, target net.IP) []byte {
	b := make([]byte, 32)
	b[0] = 136  // type: neighbour advertisement
	b[4] = 0x20 // flags: R=0, S=0, O=1
	copy(b[8:24], target.To16())
	b[24], b[25] = 2, 1 // option: target link-layer address, 8 bytes
	copy(b[26:32], mac)
	return b
}

func sendUnsolicitedNA(ifIndex int, mac net.HardwareAddr, ip net.IP) error {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
	if err != nil {
		return fmt.Errorf("ICMPv6 socket: %w", err)
	}
	defer unix.Close(fd)
	// RFC 4861, section 7.1.2: receivers drop NAs whose hop limit is not 255.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 255); err != nil {
		return fmt.Errorf("set hop limit: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifIndex); err != nil {
		return fmt.Errorf("set multicast interface: %w", err)
	}
	src := &unix.SockaddrInet6{ZoneId: uint32(ifIndex)}
	copy(src.Addr[:], ip.To16())
	if err := unix.Bind(fd, src); err != nil {
		return fmt.Errorf("bind to %s: %w", ip, err)
	}
	// All-nodes multicast, ff02::1 (RFC 4291, section 2.7.1).
	to := &unix.SockaddrInet6{Addr: [16]byte{0xff, 0x02, 15: 1}, ZoneId: uint32(ifIndex)}
	if err := unix.Sendto(fd, unsolicitedNA(mac, ip), 0, to); err != nil {
		return fmt.Errorf("send neighbour advertisement: %w", err)
	}
	return nil
}
