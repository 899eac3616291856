package etcd

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// maxFuzzInput bounds each fuzz input, so that every run is short.
const maxFuzzInput = 1 << 16

func fuzzLeases() []store.Lease {
	created := time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)
	return []store.Lease{
		{IP: netip.MustParseAddr("10.1.0.2"), ContainerID: "c1", IfName: "eth0", Created: created},
		{IP: netip.MustParseAddr("fd00::2"), ContainerID: "0123456789abcdef", IfName: "net1", Created: created, Conflict: "02:00:00:00:00:01"},
	}
}

// FuzzDecodeLease: a lease record read from etcd either decodes to a lease
// that encodes back to a record decoding to the same lease, or is refused
// as ErrCorrupt; never a panic.
func FuzzDecodeLease(f *testing.F) {
	for _, l := range fuzzLeases() {
		f.Add(addrKey(l.IP), encodeLease(l))
	}
	f.Add("4-0a010002", []byte(`{"v":1,"ip":"10.1.0.2","containerID":"c1","ifName":"eth0","created":"2025-03-01T12:00:00Z"} {}`))
	f.Add("6-fd000000000000000000000000000002", []byte(`{"v":2}`))
	f.Fuzz(func(t *testing.T, key string, data []byte) {
		if len(data) > maxFuzzInput || len(key) > 64 {
			return
		}
		ip, ok := parseAddrKey(key)
		if !ok {
			return
		}
		l, err := decodeLease(ip, data)
		if err != nil {
			if !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("decodeLease error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, err := decodeLease(ip, encodeLease(l))
		if err != nil {
			t.Fatalf("re-encoded %+v does not decode: %v", l, err)
		}
		if again.IP != l.IP || again.ContainerID != l.ContainerID || again.IfName != l.IfName || again.Conflict != l.Conflict || !again.Created.Equal(l.Created) {
			t.Fatalf("round trip changed the lease: %+v, then %+v", l, again)
		}
	})
}

// FuzzParseKey: a key is classified as one of the store's only if the
// store writes that very string for what it names, so that no repair or
// release ever touches another program's key.
func FuzzParseKey(f *testing.F) {
	s := &Store{root: "/maclan/net1/"}
	for _, l := range fuzzLeases() {
		for _, k := range []string{s.leaseKey(l.IP), s.attachKey(l.ContainerID, l.IfName, l.IP)} {
			f.Add(strings.TrimPrefix(k, s.root))
		}
	}
	for _, k := range []string{"cursor/0", "lease/4-0A010002", "lease/4-0a010002/x", "attach/c1=eth0/4-0a010002/x", "attach/c1=a=b/4-0a010002", "cursor/a/b", "lease/6-00000000000000000000ffff0a010002"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, rel string) {
		if len(rel) > 1024 {
			return
		}
		var want string
		switch k := parseKey(rel); k.kind {
		case keyForeign:
			return
		case keyLease:
			want = strings.TrimPrefix(s.leaseKey(k.ip), s.root)
		case keyIndex:
			want = strings.TrimPrefix(s.attachKey(k.containerID, k.ifName, k.ip), s.root)
		case keyCursor:
			want = strings.TrimPrefix(s.cursorKey(k.set), s.root)
		}
		if want != rel {
			t.Fatalf("parseKey(%q) names %q", rel, want)
		}
	})
}

// FuzzDecodeJournal: a journal file decodes or is refused, and replay
// accepts only records naming a lease key of the network and the index
// key of the same address.
func FuzzDecodeJournal(f *testing.F) {
	s := &Store{root: "/maclan/net1/"}
	var recs []unsureRecord
	for _, l := range fuzzLeases() {
		recs = append(recs, unsureRecord{Key: s.leaseKey(l.IP), Value: string(encodeLease(l)), Index: s.attachKey(l.ContainerID, l.IfName, l.IP)})
	}
	b, _ := json.Marshal(recs) // strings only: cannot fail
	f.Add(b)
	f.Add([]byte(`[{"key":"/maclan/net1/config","value":"x","index":"/other/key"}]`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxFuzzInput {
			return
		}
		recs, err := decodeJournal(data)
		if err != nil {
			return
		}
		for _, r := range recs {
			if !validRecord(s.root, r) {
				continue
			}
			l := parseKey(strings.TrimPrefix(r.Key, s.root))
			i := parseKey(strings.TrimPrefix(r.Index, s.root))
			if r.Key != s.leaseKey(l.ip) || r.Index != s.attachKey(i.containerID, i.ifName, l.ip) {
				t.Fatalf("replay would delete %q and %q", r.Key, r.Index)
			}
		}
	})
}
