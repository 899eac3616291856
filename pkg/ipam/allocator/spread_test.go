package allocator

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/maclan-cni/maclan/pkg/ipam/iprange"
	"github.com/maclan-cni/maclan/pkg/ipam/store/memstore"
)

// Hosts sharing a store start in different places, keep cursors of their
// own, and together still hand out every address exactly once.
func TestSpreadHostsShareARange(t *testing.T) {
	mem := memstore.New()
	set := sets(t, subnet("10.0.0.0/24")) // .2-.254
	hosts := []string{"host-a", "host-b", "host-c"}
	allocs := map[string]*Allocator{}
	for _, h := range hosts {
		allocs[h] = New(mem.Open(), set, Options{Spread: h})
	}
	first := map[string]string{}
	for _, h := range hosts {
		got := mustAllocate(t, allocs[h], h+"-0")
		first[h] = got[0]
	}
	if first["host-a"] == first["host-b"] || first["host-b"] == first["host-c"] || first["host-a"] == first["host-c"] {
		t.Errorf("hosts started at the same address: %v", first)
	}
	if first["host-a"] == "10.0.0.2" && first["host-b"] == "10.0.0.3" {
		t.Errorf("hosts walk from the range start as with one shared cursor: %v", first)
	}
	// Each continues from its own cursor.
	for _, h := range hosts {
		got := mustAllocate(t, allocs[h], h+"-1")
		want := netip.MustParseAddr(first[h]).Next().String()
		if got[0] != want && got[0] != "10.0.0.2" {
			t.Errorf("%s's second address is %s, want %s after its first", h, got[0], want)
		}
	}
	// Then the range fills, every address once.
	seen := map[string]bool{}
	for _, h := range hosts {
		seen[first[h]] = true
	}
	n := len(seen) + len(hosts) // the second round too
	for i := 0; ; i++ {
		h := hosts[i%len(hosts)]
		_, err := allocs[h].Allocate(ctx, fmt.Sprintf("%s-fill-%d", h, i), "eth0", nil)
		if errors.Is(err, ErrExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 253 {
		t.Errorf("%d addresses handed out, want all 253 of .2-.254", n)
	}
}

func TestSpreadIsDeterministicPerHost(t *testing.T) {
	set := sets(t, subnet("10.0.0.0/16"))[0]
	a := New(nil, nil, Options{Spread: "host-a"})
	b := New(nil, nil, Options{Spread: "host-a"})
	if a.spreadStart(set) != b.spreadStart(set) || a.cursorName(0) != b.cursorName(0) {
		t.Error("one host's start or cursor differs between calls")
	}
	if got := New(nil, nil, Options{}).cursorName(0); got != "0" {
		t.Errorf("without Spread the cursor is %q, want the shared \"0\"", got)
	}
}

func TestAddOffsetAndRangeSize(t *testing.T) {
	rg := func(a, b string) iprange.Range {
		return iprange.Range{RangeStart: netip.MustParseAddr(a), RangeEnd: netip.MustParseAddr(b)}
	}
	if got := rangeSize(rg("10.0.0.2", "10.0.0.254")); got != 253 {
		t.Errorf("size = %d, want 253", got)
	}
	if got := rangeSize(rg("2001:db8::", "2001:db8::ffff:ffff:ffff:ffff")); got != 1<<63 {
		t.Errorf("huge v6 size = %d, want capped 2^63", got)
	}
	if got := addOffset(netip.MustParseAddr("10.0.0.250"), 10); got != netip.MustParseAddr("10.0.1.4") {
		t.Errorf("v4 add = %s", got)
	}
	if got := addOffset(netip.MustParseAddr("2001:db8::ffff:ffff:ffff:ffff"), 1); got != netip.MustParseAddr("2001:db8:0:1::") {
		t.Errorf("v6 carry = %s", got)
	}
	// The start always lies inside its set.
	set := iprange.RangeSet{{Subnet: netip.MustParsePrefix("192.0.2.0/28")}, {Subnet: netip.MustParsePrefix("198.51.100.0/30")}}
	if err := set.Canonicalize(); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"a", "b", "host-1", "host-2", "x"} {
		if ip := New(nil, nil, Options{Spread: h}).spreadStart(set); set.RangeFor(ip) < 0 {
			t.Errorf("%s starts at %s, outside the set", h, ip)
		}
	}
}
