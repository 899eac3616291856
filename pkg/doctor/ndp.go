package doctor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// NDP message types (RFC 4861, section 4) and options.
const (
	icmp6NeighborSolicit = 135
	icmp6NeighborAdvert  = 136
	ndpOptSourceLLA      = 1
	ndpOptTargetLLA      = 2
	ipProtoICMPv6        = 58
)

// linkLocal is the modified EUI-64 link-local address of mac (RFC 4291,
// appendix A: the U/L bit inverted, ff:fe in the middle).
func linkLocal(mac net.HardwareAddr) netip.Addr {
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	a[8], a[9], a[10] = mac[0]^2, mac[1], mac[2]
	a[11], a[12] = 0xff, 0xfe
	a[13], a[14], a[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(a)
}

// solicitedNode is the solicited-node multicast address of ip (RFC 4291,
// section 2.7.1) and the Ethernet address it maps to (RFC 2464, section 7).
func solicitedNode(ip netip.Addr) (netip.Addr, net.HardwareAddr) {
	t := ip.As16()
	a := [16]byte{0xff, 0x02, 11: 1, 12: 0xff, 13: t[13], 14: t[14], 15: t[15]}
	return netip.AddrFrom16(a), net.HardwareAddr{0x33, 0x33, 0xff, t[13], t[14], t[15]}
}

// icmp6Checksum is the ICMPv6 checksum over the pseudo-header (RFC 8200,
// section 8.1) and msg, whose checksum field must be zero.
func icmp6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	var l [8]byte
	binary.BigEndian.PutUint32(l[0:], uint32(len(msg)))
	l[7] = ipProtoICMPv6
	add(l[:])
	add(msg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// neighborSolicit builds the IPv6 packet of a neighbour solicitation for
// target from src, with mac as source link-layer address (RFC 4861,
// section 4.3), sent to target's solicited-node group with hop limit 255.
func neighborSolicit(src netip.Addr, mac net.HardwareAddr, target netip.Addr) (pkt []byte, dstMAC net.HardwareAddr) {
	dst, dstMAC := solicitedNode(target)
	msg := make([]byte, 32)
	msg[0] = icmp6NeighborSolicit
	t := target.As16()
	copy(msg[8:24], t[:])
	msg[24], msg[25] = ndpOptSourceLLA, 1 // one unit of 8 bytes
	copy(msg[26:32], mac)
	binary.BigEndian.PutUint16(msg[2:], icmp6Checksum(src, dst, msg))
	return append(ipv6Header(src, dst, len(msg)), msg...), dstMAC
}

func ipv6Header(src, dst netip.Addr, payload int) []byte {
	h := make([]byte, 40)
	h[0] = 6 << 4
	binary.BigEndian.PutUint16(h[4:], uint16(payload))
	h[6], h[7] = ipProtoICMPv6, 255
	s, d := src.As16(), dst.As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return h
}

// advertisedBy returns the MAC with which pkt, an IPv6 packet, advertises
// target (a neighbour advertisement, RFC 4861 section 4.4): its target
// link-layer address option, else the frame's source from. Anything else
// gives nil.
func advertisedBy(pkt []byte, target netip.Addr, from net.HardwareAddr) net.HardwareAddr {
	if len(pkt) < 40+24 || pkt[0]>>4 != 6 || pkt[6] != ipProtoICMPv6 || pkt[7] != 255 {
		return nil // RFC 4861 section 7.1.2: hop limit 255, or not on-link
	}
	msg := pkt[40:]
	if msg[0] != icmp6NeighborAdvert || msg[1] != 0 {
		return nil
	}
	if netip.AddrFrom16([16]byte(msg[8:24])) != target {
		return nil
	}
	for opts := msg[24:]; len(opts) >= 8; {
		n := int(opts[1]) * 8
		if n == 0 || n > len(opts) {
			break
		}
		if opts[0] == ndpOptTargetLLA && n >= 8 {
			return net.HardwareAddr(append([]byte(nil), opts[2:8]...))
		}
		opts = opts[n:]
	}
	return from
}

// solicit asks for target's MAC with a neighbour solicitation out of
// ifIndex and waits up to wait for the advertisement. It acts in the
// calling thread's namespace, with a packet socket: the interface needs
// no IPv6 address, and the kernel's own neighbour cache is not touched.
func solicit(ifIndex int, mac net.HardwareAddr, target netip.Addr, wait time.Duration) (net.HardwareAddr, error) {
	proto := htons(unix.ETH_P_IPV6)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, fmt.Errorf("NDP socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifIndex}); err != nil {
		return nil, fmt.Errorf("bind NDP socket to interface %d: %w", ifIndex, err)
	}
	pkt, dstMAC := neighborSolicit(linkLocal(mac), mac, target)
	to := &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifIndex, Halen: 6}
	copy(to.Addr[:], dstMAC)
	end := time.Now().Add(wait)
	resend := time.Now()
	buf := make([]byte, 1500)
	for time.Now().Before(end) {
		if !time.Now().Before(resend) {
			if err := unix.Sendto(fd, pkt, 0, to); err != nil {
				return nil, fmt.Errorf("send neighbour solicitation for %s: %w", target, err)
			}
			resend = resend.Add(wait / 3)
		}
		ms := int(time.Until(earlier(end, resend)).Milliseconds()) + 1
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ms)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("wait for the neighbour advertisement: %w", err)
		}
		if n <= 0 {
			continue
		}
		nr, from, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			continue // EAGAIN after a spurious wake-up
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if who := advertisedBy(buf[:nr], target, net.HardwareAddr(ll.Addr[:6])); who != nil {
			return who, nil
		}
	}
	return nil, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
