package disk

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"testing"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// The index entry is read from a file that a crash, a disk error or a hand
// edit may have damaged: decodeAttach must reject, never accept garbage.
func FuzzDecodeAttach(f *testing.F) {
	f.Add("c1", "eth0", encodeAttach("c1", "eth0", []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::2")}))
	f.Add("c1", "eth0", encodeAttach("c1", "eth0", nil))
	for _, odd := range []string{"::ffff:10.0.0.2", "fe80::1%eth0"} {
		r := attachRecord{Version: recordVersion, ContainerID: "c1", IfName: "eth0", IPs: []string{odd}}
		r.Sum = r.sum()
		b, _ := json.Marshal(&r) // plain strings: cannot fail
		f.Add("c1", "eth0", b)
	}
	f.Add("c1", "eth0", []byte(`{"v":1}{"v":1}`))
	// A lease record as the entry of an attachment's first address: its
	// own attachment's, then another's.
	f.Add("c1", "eth0", encodeLease(l("10.0.0.2", "c1")))
	f.Add("c1", "eth0", encodeLease(l("10.0.0.2", "c2")))
	f.Fuzz(func(t *testing.T, id, ifName string, data []byte) {
		if len(data) > maxRecordSize || store.ValidateAttachment(id, ifName) != nil {
			return // the store reads no more, and never under an invalid name
		}
		ips, err := decodeAttach(id, ifName, data)
		if err != nil {
			if !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		for i, ip := range ips {
			if !ip.IsValid() || ip.Zone() != "" || ip.Is4In6() {
				t.Fatalf("accepted address %v", ip)
			}
			for _, o := range ips[:i] {
				if o == ip {
					t.Fatalf("duplicate %v in %v", ip, ips)
				}
			}
		}
		again, err := decodeAttach(id, ifName, encodeAttach(id, ifName, ips))
		if err != nil || len(again) != len(ips) {
			t.Fatalf("re-encoding %v gives %v, %v", ips, again, err)
		}
	})
}

// A bitmap chunk file is accepted only at its exact size with its magic,
// and then round-trips byte for byte.
func FuzzChunkUnmarshal(f *testing.F) {
	var c chunk
	c.set(0, true)
	c.set(chunkAddrs-1, true)
	f.Add(c.marshal())
	f.Add(new(chunk).marshal())
	f.Add([]byte(bitmapMagic))
	f.Add([]byte("junk"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 2*chunkSize {
			return // the store reads at most chunkSize+1 bytes
		}
		var c chunk
		if err := c.unmarshal(data); err != nil {
			return
		}
		if !bytes.Equal(c.marshal(), data) {
			t.Fatal("an accepted chunk does not marshal back to its bytes")
		}
		if i, ok := c.firstZero(0, chunkAddrs-1); ok && c.get(i) {
			t.Fatalf("firstZero gave set bit %d", i)
		}
	})
}
