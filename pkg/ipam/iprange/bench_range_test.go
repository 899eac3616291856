package iprange

import (
	"fmt"
	"net/netip"
	"testing"
)

// nthAddr is base plus n, for building large inputs.
func nthAddr(base netip.Addr, n int) netip.Addr {
	a := base.As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// bigSet is n disjoint four-address ranges of 10.0.0.0/8, listed from the
// highest down so that no input order helps.
func bigSet(n int) RangeSet {
	base := netip.MustParseAddr("10.0.0.0")
	set := make(RangeSet, n)
	for i := range set {
		k := n - 1 - i
		set[i] = Range{Subnet: netip.MustParsePrefix("10.0.0.0/8"),
			RangeStart: nthAddr(base, 4*k+1), RangeEnd: nthAddr(base, 4*k+4)}
	}
	return set
}

// BenchmarkRangeSetCanonicalize times the validation of one range set of
// many ranges (security review issue 11, finding 6).
func BenchmarkRangeSetCanonicalize(b *testing.B) {
	for _, n := range []int{16000, 32000} {
		b.Run(fmt.Sprintf("ranges=%d", n), func(b *testing.B) {
			orig := bigSet(n)
			set := make(RangeSet, n)
			for b.Loop() {
				copy(set, orig)
				if err := set.Canonicalize(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
