package arp

import (
	"bytes"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzAnswer feeds arbitrary frames to the decoder and the answer rules.
// Whatever the bytes, nothing panics; a frame that decodes re-encodes to
// its first 28 bytes (every header field is checked, none is dropped); and
// an answer is never our own MAC and always the frame's sender.
func FuzzAnswer(f *testing.F) {
	reply := Packet{Op: OpReply, SenderMAC: theirs, SenderIP: target, TargetMAC: ours, TargetIP: zero4}.Marshal()
	probe := Packet{Op: OpRequest, SenderMAC: theirs, SenderIP: zero4, TargetMAC: zeroHW, TargetIP: target}.Marshal()
	f.Add(reply, uint8(unix.PACKET_HOST))
	f.Add(probe, uint8(unix.PACKET_BROADCAST))
	f.Add(append(bytes.Clone(reply), make([]byte, 18)...), uint8(unix.PACKET_HOST))
	f.Add(reply[:20], uint8(unix.PACKET_OUTGOING))
	f.Add([]byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, pkttype uint8) {
		if len(b) > 1<<16 { // a packet socket reads at most a frame
			return
		}
		p, err := Unmarshal(b)
		if err == nil && !bytes.Equal(p.Marshal(), b[:28]) {
			t.Fatalf("Unmarshal(%x) = %+v, which encodes to %x", b, p, p.Marshal())
		}
		from := &unix.SockaddrLinklayer{Ifindex: 3, Pkttype: pkttype, Halen: 6}
		copy(from.Addr[:], theirs)
		for _, ip := range []netip.Addr{target, zero4, netip.MustParseAddr("198.51.100.1")} {
			got := answer(b, from, 3, ip, ours)
			if got == nil {
				continue
			}
			if err != nil || bytes.Equal(got, ours) || !bytes.Equal(got, p.SenderMAC) {
				t.Fatalf("answer(%x, %s) = %v: not the sender of a decoded frame from another MAC", b, ip, got)
			}
		}
	})
}
