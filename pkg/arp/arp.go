// Package arp probes the LAN for an IPv4 address before it is handed out,
// the way RFC 5227 ("IPv4 Address Conflict Detection") describes, with
// timers short enough for a container start.
package arp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// ARP operations (RFC 826).
const (
	OpRequest = 1
	OpReply   = 2
)

// Packet is an Ethernet/IPv4 ARP packet (RFC 826).
type Packet struct {
	Op        uint16
	SenderMAC net.HardwareAddr
	SenderIP  netip.Addr
	TargetMAC net.HardwareAddr
	TargetIP  netip.Addr
}

// Marshal encodes p; a zero address encodes as zeroes.
func (p Packet) Marshal() []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)      // hardware type: Ethernet
	binary.BigEndian.PutUint16(b[2:], 0x0800) // protocol type: IPv4
	b[4], b[5] = 6, 4                         // address lengths
	binary.BigEndian.PutUint16(b[6:], p.Op)
	copy(b[8:14], p.SenderMAC)
	if p.SenderIP.Is4() {
		a := p.SenderIP.As4()
		copy(b[14:18], a[:])
	}
	copy(b[18:24], p.TargetMAC)
	if p.TargetIP.Is4() {
		a := p.TargetIP.As4()
		copy(b[24:28], a[:])
	}
	return b
}

// Unmarshal decodes an Ethernet/IPv4 ARP packet.
func Unmarshal(b []byte) (Packet, error) {
	if len(b) < 28 || binary.BigEndian.Uint16(b[0:]) != 1 || binary.BigEndian.Uint16(b[2:]) != 0x0800 || b[4] != 6 || b[5] != 4 {
		return Packet{}, errors.New("not an Ethernet/IPv4 ARP packet")
	}
	return Packet{
		Op:        binary.BigEndian.Uint16(b[6:]),
		SenderMAC: net.HardwareAddr(bytes.Clone(b[8:14])),
		SenderIP:  netip.AddrFrom4([4]byte(b[14:18])),
		TargetMAC: net.HardwareAddr(bytes.Clone(b[18:24])),
		TargetIP:  netip.AddrFrom4([4]byte(b[24:28])),
	}, nil
}

// Conflicts reports whether p, received while probing for ip from mac,
// shows another device using or claiming ip. RFC 5227, section 2.1.1, counts
// exactly two kinds of packet, and only from a hardware address that is not
// ours:
//   - an ARP request or reply whose sender IP address is ip (its owner
//     answering, or announcing it);
//   - an ARP probe (a request with sender IP address zero) whose target IP
//     address is ip: another host probing for it at the same time.
//
// Nothing else counts: a request that merely asks for ip (sender IP address
// some other address), operations other than request and reply (RARP, InARP),
// and a sender hardware address that names no single device (zero, or a
// group address: RFC 1812, section 3.3.2, tells routers to ignore ARP
// replies that claim one). ip must be a unicast IPv4 address: a probe
// "for" 0.0.0.0 would match every other host's probe.
func (p Packet) Conflicts(ip netip.Addr, mac net.HardwareAddr) bool {
	switch {
	case !ip.Is4() || ip.IsUnspecified():
		return false
	case p.Op != OpRequest && p.Op != OpReply:
		return false
	case !unicastMAC(p.SenderMAC) || bytes.Equal(p.SenderMAC, mac):
		return false
	case p.SenderIP == ip:
		return true
	default:
		return p.Op == OpRequest && p.SenderIP == netip.IPv4Unspecified() && p.TargetIP == ip
	}
}

// unicastMAC reports whether m is a 6-byte Ethernet address of one device:
// not all zeroes, and with the individual/group bit (the lowest bit of the
// first byte, IEEE 802-2014 section 8.2) clear.
func unicastMAC(m net.HardwareAddr) bool {
	return len(m) == 6 && m[0]&1 == 0 && !bytes.Equal(m, make(net.HardwareAddr, 6))
}

// answer decodes a frame read from a probe socket bound to ifIndex (from is
// where recvfrom says it came from) and returns the hardware address of the
// device it shows using ip, or nil. Frames of another interface, frames we
// sent (looped back to packet sockets), and frames whose Ethernet source is
// our own mac are not answers, whatever they carry.
func answer(b []byte, from unix.Sockaddr, ifIndex int, ip netip.Addr, mac net.HardwareAddr) net.HardwareAddr {
	ll, ok := from.(*unix.SockaddrLinklayer)
	if !ok || ll.Ifindex != ifIndex || ll.Pkttype == unix.PACKET_OUTGOING {
		return nil
	}
	if ll.Halen == 6 && bytes.Equal(ll.Addr[:6], mac) {
		return nil
	}
	p, err := Unmarshal(b)
	if err != nil || !p.Conflicts(ip, mac) {
		return nil
	}
	return p.SenderMAC
}

// ProbeOptions set how hard to look. RFC 5227's own timers (three probes
// one to two seconds apart) suit a host booting; a container start cannot
// wait seconds, and devices on a LAN answer within milliseconds.
type ProbeOptions struct {
	Probes   int           // probes to send (default 3)
	Interval time.Duration // between probes (default 20ms)
	Wait     time.Duration // after the last probe (default 50ms)
}

func (o *ProbeOptions) defaults() {
	if o.Probes <= 0 {
		o.Probes = 3
	}
	if o.Interval <= 0 {
		o.Interval = 20 * time.Millisecond
	}
	if o.Wait <= 0 {
		o.Wait = 50 * time.Millisecond
	}
}

// Duration is the longest a Probe with these options takes.
func (o ProbeOptions) Duration() time.Duration {
	o.defaults()
	return time.Duration(o.Probes-1)*o.Interval + o.Wait
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// socket opens an ARP packet socket bound to the interface ifIndex, so that
// only its frames are read, and returns it with the broadcast address to
// send to.
func socket(ifIndex int) (int, *unix.SockaddrLinklayer, error) {
	// Protocol 0: the socket receives nothing until bind names both the
	// protocol and the interface (packet(7)). Opened with ETH_P_ARP, it
	// would queue the ARP frames of every interface until bind, and one of
	// them could pass for an answer on this one.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, fmt.Errorf("ARP socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifIndex}); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("bind ARP socket to interface %d: %w", ifIndex, err)
	}
	return fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifIndex, Halen: 6,
		Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}, nil
}

// Probe sends ARP probes for ip out of the interface ifIndex (whose MAC is
// mac) and listens for an answer. It returns the MAC of a device that
// answered, or nil if none did within the options' time. It acts in the
// calling thread's network namespace.
func Probe(ifIndex int, mac net.HardwareAddr, ip netip.Addr, opts ProbeOptions) (net.HardwareAddr, error) {
	if !ip.Is4() || ip.IsUnspecified() {
		return nil, fmt.Errorf("ARP probe for %s: not a unicast IPv4 address", ip)
	}
	opts.defaults()
	fd, to, err := socket(ifIndex)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	// An ARP probe: a request with a zero sender address and a zero target
	// hardware address (RFC 5227, section 2.1.1).
	probe := Packet{Op: OpRequest, SenderMAC: mac, SenderIP: netip.IPv4Unspecified(), TargetMAC: make(net.HardwareAddr, 6), TargetIP: ip}.Marshal()

	start := time.Now()
	nextSend := start
	end := start.Add(opts.Duration())
	sent := 0
	buf := make([]byte, 1500)
	for {
		now := time.Now()
		if sent < opts.Probes && !now.Before(nextSend) {
			if err := unix.Sendto(fd, probe, 0, to); err != nil {
				return nil, fmt.Errorf("send ARP probe for %s: %w", ip, err)
			}
			sent++
			nextSend = nextSend.Add(opts.Interval)
		}
		if sent == opts.Probes && !now.Before(end) {
			return nil, nil
		}
		wake := end
		if sent < opts.Probes {
			wake = nextSend
		}
		ms := int(time.Until(wake).Milliseconds()) + 1
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("wait for ARP answers: %w", err)
		}
		if n <= 0 {
			continue
		}
		nr, from, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			continue // EAGAIN after a spurious wake-up; poll again
		}
		if owner := answer(buf[:nr], from, ifIndex, ip, mac); owner != nil {
			return owner, nil
		}
	}
}
