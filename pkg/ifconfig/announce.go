package ifconfig

import (
	"fmt"
	"net"
	"net/netip"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/maclan-cni/maclan/pkg/arp"
)

// announce tells the LAN that the addresses of ips now live at the link's
// MAC, so that neighbours (the gateway first) replace stale cache entries at
// once instead of after their reachable time runs out: an ARP announcement
// for IPv4 (RFC 5227, section 2.3) and an unsolicited neighbour
// advertisement with the override flag for IPv6 (RFC 4861, section 7.2.6).
func announce(link netlink.Link, ips []*current.IPConfig, count int) error {
	if count <= 0 {
		return nil
	}
	mac := link.Attrs().HardwareAddr
	idx := link.Attrs().Index
	// One ARP socket for every announcement: each socket opened and
	// closed costs an RCU grace period (see arp.Announcer).
	var arpSock *arp.Announcer
	defer func() {
		if arpSock != nil {
			_ = arpSock.Close() // nothing was buffered: sendto has returned
		}
	}()
	for i := 0; i < count; i++ {
		for _, ipc := range ips {
			var err error
			if ip4 := ipc.Address.IP.To4(); ip4 != nil {
				if arpSock == nil {
					if arpSock, err = arp.NewAnnouncer(); err != nil {
						return err
					}
				}
				err = sendARPAnnouncement(arpSock, idx, mac, ip4)
			} else {
				err = sendUnsolicitedNA(idx, mac, ipc.Address.IP)
			}
			if err != nil {
				return fmt.Errorf("announce %s on %q: %w", ipc.Address.IP, link.Attrs().Name, err)
			}
		}
	}
	return nil
}

func sendARPAnnouncement(a *arp.Announcer, ifIndex int, mac net.HardwareAddr, ip net.IP) error {
	addr, ok := netip.AddrFromSlice(ip.To4())
	if !ok {
		return fmt.Errorf("ARP announcement for %s: not an IPv4 address", ip)
	}
	return a.Announce(ifIndex, mac, addr)
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
