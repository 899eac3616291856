package arp

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

var (
	ours   = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	theirs = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
	target = netip.MustParseAddr("198.51.100.9")
	zero4  = netip.IPv4Unspecified()
	zeroHW = net.HardwareAddr{0, 0, 0, 0, 0, 0}
)

func TestMarshalRoundTrip(t *testing.T) {
	p := Packet{Op: OpReply, SenderMAC: theirs, SenderIP: target, TargetMAC: ours, TargetIP: zero4}
	got, err := Unmarshal(p.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, p) {
		t.Errorf("got %+v, want %+v", got, p)
	}
	if _, err := Unmarshal(make([]byte, 27)); err == nil {
		t.Error("Unmarshal of a short packet: got no error, want one")
	}
}

// TestConflicts is the table of RFC 5227, section 2.1.1: what counts as
// another device using or probing for the address, and what does not.
func TestConflicts(t *testing.T) {
	other := netip.MustParseAddr("198.51.100.1")
	group := net.HardwareAddr{0x01, 0x00, 0x5e, 0, 0, 1}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	tests := []struct {
		name string
		p    Packet
		want bool
	}{
		// Counted.
		{"reply from the owner", Packet{Op: OpReply, SenderMAC: theirs, SenderIP: target, TargetMAC: ours, TargetIP: zero4}, true},
		{"owner announcing (gratuitous request)", Packet{Op: OpRequest, SenderMAC: theirs, SenderIP: target, TargetMAC: zeroHW, TargetIP: target}, true},
		{"owner asking for another address", Packet{Op: OpRequest, SenderMAC: theirs, SenderIP: target, TargetIP: other}, true},
		{"gratuitous reply from the owner", Packet{Op: OpReply, SenderMAC: theirs, SenderIP: target, TargetMAC: bcast, TargetIP: target}, true},
		{"another host probing for it", Packet{Op: OpRequest, SenderMAC: theirs, SenderIP: zero4, TargetMAC: zeroHW, TargetIP: target}, true},
		{"another host probing, target MAC not zero (ignored field)", Packet{Op: OpRequest, SenderMAC: theirs, SenderIP: zero4, TargetMAC: ours, TargetIP: target}, true},
		// Not counted.
		{"our own probe", Packet{Op: OpRequest, SenderMAC: ours, SenderIP: zero4, TargetIP: target}, false},
		{"a reply claiming it from our own MAC", Packet{Op: OpReply, SenderMAC: ours, SenderIP: target, TargetIP: target}, false},
		{"a request for it from another address", Packet{Op: OpRequest, SenderMAC: theirs, SenderIP: other, TargetMAC: zeroHW, TargetIP: target}, false},
		{"a reply to another address naming it as target", Packet{Op: OpReply, SenderMAC: theirs, SenderIP: other, TargetMAC: ours, TargetIP: target}, false},
		{"a reply with sender 0.0.0.0 for it (not a probe)", Packet{Op: OpReply, SenderMAC: theirs, SenderIP: zero4, TargetIP: target}, false},
		{"another host probing for another address", Packet{Op: OpRequest, SenderMAC: theirs, SenderIP: zero4, TargetIP: other}, false},
		{"RARP reply with its address", Packet{Op: 4, SenderMAC: theirs, SenderIP: target, TargetIP: target}, false},
		{"RARP request with its address", Packet{Op: 3, SenderMAC: theirs, SenderIP: target, TargetIP: target}, false},
		{"InARP reply with its address", Packet{Op: 9, SenderMAC: theirs, SenderIP: target}, false},
		{"operation 0 with its address", Packet{Op: 0, SenderMAC: theirs, SenderIP: target}, false},
		{"reply from MAC zero", Packet{Op: OpReply, SenderMAC: zeroHW, SenderIP: target}, false},
		{"reply from the broadcast MAC", Packet{Op: OpReply, SenderMAC: bcast, SenderIP: target}, false},
		{"reply from a multicast MAC", Packet{Op: OpReply, SenderMAC: group, SenderIP: target}, false},
		{"probe from a multicast MAC", Packet{Op: OpRequest, SenderMAC: group, SenderIP: zero4, TargetIP: target}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Conflicts(target, ours); got != tt.want {
				t.Errorf("Conflicts = %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("probing for 0.0.0.0 matches nothing", func(t *testing.T) {
		p := Packet{Op: OpRequest, SenderMAC: theirs, SenderIP: zero4, TargetIP: zero4}
		if p.Conflicts(zero4, ours) {
			t.Errorf("Conflicts(0.0.0.0) = true for another host's probe of 0.0.0.0, want false")
		}
	})
}

// wire returns the 28 bytes of an ARP packet with the header fields given,
// to test what Unmarshal refuses.
func wire(htype, ptype uint16, hlen, plen byte, p Packet) []byte {
	b := p.Marshal()
	binary.BigEndian.PutUint16(b[0:], htype)
	binary.BigEndian.PutUint16(b[2:], ptype)
	b[4], b[5] = hlen, plen
	return b
}

// TestAnswer runs frames as the probe socket reads them through answer: the
// header checks of Unmarshal, where the frame came from, and Conflicts.
func TestAnswer(t *testing.T) {
	const ifIndex = 7
	claim := Packet{Op: OpReply, SenderMAC: theirs, SenderIP: target, TargetMAC: ours, TargetIP: zero4}
	from := func(idx int, pkttype uint8, src net.HardwareAddr) unix.Sockaddr {
		ll := &unix.SockaddrLinklayer{Ifindex: idx, Pkttype: pkttype, Halen: 6}
		copy(ll.Addr[:], src)
		return ll
	}
	padded := append(claim.Marshal(), make([]byte, 18)...) // Ethernet minimum payload
	tests := []struct {
		name  string
		frame []byte
		from  unix.Sockaddr
		want  net.HardwareAddr
	}{
		{"a claim on the interface", claim.Marshal(), from(ifIndex, unix.PACKET_HOST, theirs), theirs},
		{"a claim, broadcast", claim.Marshal(), from(ifIndex, unix.PACKET_BROADCAST, theirs), theirs},
		{"a claim with Ethernet padding", padded, from(ifIndex, unix.PACKET_HOST, theirs), theirs},
		{"a claim on another interface", claim.Marshal(), from(ifIndex+1, unix.PACKET_HOST, theirs), nil},
		{"a claim we sent", claim.Marshal(), from(ifIndex, unix.PACKET_OUTGOING, theirs), nil},
		{"a claim from our own Ethernet source", claim.Marshal(), from(ifIndex, unix.PACKET_HOST, ours), nil},
		{"a claim from a socket that is not a packet socket", claim.Marshal(), &unix.SockaddrInet4{}, nil},
		{"hardware type not Ethernet", wire(6, 0x0800, 6, 4, claim), from(ifIndex, unix.PACKET_HOST, theirs), nil},
		{"protocol type not IPv4", wire(1, 0x86dd, 6, 4, claim), from(ifIndex, unix.PACKET_HOST, theirs), nil},
		{"hardware length not 6", wire(1, 0x0800, 8, 4, claim), from(ifIndex, unix.PACKET_HOST, theirs), nil},
		{"protocol length not 4", wire(1, 0x0800, 6, 16, claim), from(ifIndex, unix.PACKET_HOST, theirs), nil},
		{"truncated", claim.Marshal()[:27], from(ifIndex, unix.PACKET_HOST, theirs), nil},
		{"empty", nil, from(ifIndex, unix.PACKET_HOST, theirs), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := answer(tt.frame, tt.from, ifIndex, target, ours); !bytes.Equal(got, tt.want) {
				t.Errorf("answer = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDuration(t *testing.T) {
	if got, want := (ProbeOptions{}).Duration().Milliseconds(), int64(90); got != want {
		t.Errorf("default probe duration %d ms, want %d", got, want)
	}
}
