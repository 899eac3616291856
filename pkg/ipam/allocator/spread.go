package allocator

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"

	"github.com/maclan-cni/maclan/pkg/ipam/iprange"
)

// Hosts that share one store (the etcd store: one address space for a
// whole LAN) would all walk from one shared cursor and race for the same
// next address: every lost race costs a failed transaction and a read,
// and their number grows with the hosts (docs/etcd.md: 6.1 requests per
// ADD with one host, 11.5 with ten). With Options.Spread set to the host's
// identity, each host keeps a cursor of its own and starts its first walk
// at an address derived from that identity, so that hosts allocate in
// different parts of the range and meet only as it fills. Who holds an
// address is still decided by the store's create-if-absent, one key per
// address: spreading changes the order of the walk, never its safety.

// cursorName is the store's name of set i's cursor: the set's index, with
// the host's own suffix when spreading (a valid range set name: letters,
// digits, '.', '-').
func (a *Allocator) cursorName(i int) string {
	if a.opts.Spread == "" {
		return setName(i)
	}
	return fmt.Sprintf("%s.h-%08x", setName(i), a.spreadHash())
}

func (a *Allocator) spreadHash() uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(a.opts.Spread)) // a hash.Hash never fails to write
	return h.Sum32()
}

// spreadStart is where a host that has no cursor yet starts walking set:
// a range and an offset in it, both from the host's identity. It plays the
// part of the cursor, so the walk begins just after it.
func (a *Allocator) spreadStart(set iprange.RangeSet) netip.Addr {
	h := uint64(a.spreadHash())
	rg := set[int(h%uint64(len(set)))]
	// Within the first 65,536 addresses of the range: far enough apart for
	// any LAN's hosts, and an IPv6 /64 keeps short addresses (fd00::1a2b).
	size := min(rangeSize(rg), 1<<16)
	if size == 0 {
		return rg.RangeStart
	}
	// Knuth's multiplicative hash spreads nearby hash values apart.
	return addOffset(rg.RangeStart, (h*2654435761)%size)
}

// rangeSize is the number of addresses in rg, capped at 2^63 (an IPv6
// range may be far larger; the offset only needs to land inside it).
func rangeSize(rg iprange.Range) uint64 {
	lo, hi := rg.RangeStart.As16(), rg.RangeEnd.As16()
	if binary.BigEndian.Uint64(lo[:8]) != binary.BigEndian.Uint64(hi[:8]) {
		return 1 << 63
	}
	d := binary.BigEndian.Uint64(hi[8:]) - binary.BigEndian.Uint64(lo[8:])
	if d >= 1<<63 {
		return 1 << 63
	}
	return d + 1
}

// addOffset is ip + n, for an n that keeps it inside its range.
func addOffset(ip netip.Addr, n uint64) netip.Addr {
	b := ip.As16()
	low := binary.BigEndian.Uint64(b[8:])
	sum := low + n
	if sum < low { // carry into the high half
		binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(b[:8])+1)
	}
	binary.BigEndian.PutUint64(b[8:], sum)
	out := netip.AddrFrom16(b)
	if ip.Is4() {
		return out.Unmap()
	}
	return out
}
