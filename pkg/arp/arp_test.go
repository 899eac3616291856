package arp

import (
	"net"
	"net/netip"
	"reflect"
	"testing"
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

func TestConflicts(t *testing.T) {
	tests := []struct {
		name string
		p    Packet
		want bool
	}{
		{"reply from the owner", Packet{Op: OpReply, SenderMAC: theirs, SenderIP: target}, true},
		{"owner announcing", Packet{Op: OpRequest, SenderMAC: theirs, SenderIP: target, TargetIP: target}, true},
		{"another host probing for it", Packet{Op: OpRequest, SenderMAC: theirs, SenderIP: zero4, TargetMAC: zeroHW, TargetIP: target}, true},
		{"our own probe", Packet{Op: OpRequest, SenderMAC: ours, SenderIP: zero4, TargetIP: target}, false},
		{"unrelated request", Packet{Op: OpRequest, SenderMAC: theirs, SenderIP: netip.MustParseAddr("198.51.100.1"), TargetIP: target}, false},
		{"unrelated probe", Packet{Op: OpRequest, SenderMAC: theirs, SenderIP: zero4, TargetIP: netip.MustParseAddr("198.51.100.10")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Conflicts(target, ours); got != tt.want {
				t.Errorf("Conflicts = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDuration(t *testing.T) {
	if got, want := (ProbeOptions{}).Duration().Milliseconds(), int64(90); got != want {
		t.Errorf("default probe duration %d ms, want %d", got, want)
	}
}
