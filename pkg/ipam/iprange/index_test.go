package iprange

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// pairwiseCanonicalize is RangeSet.Canonicalize as it was before the
// overlap check was sorted: every range against every earlier one. The
// sorted check must give the same error for every input.
func pairwiseCanonicalize(s RangeSet) error {
	if len(s) == 0 {
		return fmt.Errorf("empty range set")
	}
	for i := range s {
		if err := s[i].Canonicalize(); err != nil {
			return fmt.Errorf("range %d: %w", i, err)
		}
		if s[i].Subnet.Addr().BitLen() != s[0].Subnet.Addr().BitLen() {
			return fmt.Errorf("range %d (%s) is not of the same address family as range 0 (%s)", i, s[i].Subnet, s[0].Subnet)
		}
		for j := range i {
			if s[i].Overlaps(s[j]) {
				return fmt.Errorf("range %d (%s) overlaps range %d (%s)", i, s[i], j, s[j])
			}
		}
	}
	return nil
}

// pairwiseFirstOverlap is the loop that FirstOverlap replaces.
func pairwiseFirstOverlap(sets []RangeSet) (int, int, bool) {
	for i := range sets {
		for j := range i {
			if sets[i].Overlaps(sets[j]) {
				return i, j, true
			}
		}
	}
	return 0, 0, false
}

// randRange is a range of a few addresses in 10.0.0.0/26 (or, now and
// then, fd00::/122 or an invalid one), so that random ranges often
// overlap and touch.
func randRange(rng *rand.Rand) Range {
	sub, base := netip.MustParsePrefix("10.0.0.0/26"), netip.MustParseAddr("10.0.0.0")
	if rng.IntN(8) == 0 {
		sub, base = netip.MustParsePrefix("fd00::/122"), netip.MustParseAddr("fd00::")
	}
	at := func(n int) netip.Addr {
		a := base
		for range n {
			a = a.Next()
		}
		return a
	}
	lo := 1 + rng.IntN(58)
	hi := lo + rng.IntN(5)
	if rng.IntN(20) == 0 {
		lo, hi = hi+1, lo // rangeStart after rangeEnd
	}
	return Range{Subnet: sub, RangeStart: at(lo), RangeEnd: at(hi)}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestCanonicalizeMatchesPairwise(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 3000 {
		set := make(RangeSet, 1+rng.IntN(12))
		for k := range set {
			set[k] = randRange(rng)
		}
		want := pairwiseCanonicalize(append(RangeSet{}, set...))
		got := set.Canonicalize()
		if errString(got) != errString(want) {
			t.Fatalf("case %d %v: got %v, want %v", n, set, got, want)
		}
	}
}

func TestFirstOverlapMatchesPairwise(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for n := range 3000 {
		var sets []RangeSet
		for range 1 + rng.IntN(10) {
			// Disjoint ranges within a set, as Canonicalize leaves them.
			var set RangeSet
			for range 1 + rng.IntN(4) {
				r := randRange(rng)
				if r.Canonicalize() == nil && !set.Overlaps(RangeSet{r}) {
					set = append(set, r)
				}
			}
			if len(set) > 0 {
				sets = append(sets, set)
			}
		}
		wi, wj, wok := pairwiseFirstOverlap(sets)
		gi, gj, gok := FirstOverlap(sets)
		if gi != wi || gj != wj || gok != wok {
			t.Fatalf("case %d %v: got %d, %d, %v; want %d, %d, %v", n, sets, gi, gj, gok, wi, wj, wok)
		}
		x := NewIndex(sets)
		for a := netip.MustParseAddr("10.0.0.0"); a.Compare(netip.MustParseAddr("10.0.0.64")) < 0; a = a.Next() {
			wantSet, wantIdx := -1, -1
			for i, set := range sets {
				if k := set.RangeFor(a); k >= 0 {
					wantSet, wantIdx = i, k
					break
				}
			}
			if !wok {
				if s, k := x.Find(a); s != wantSet || k != wantIdx {
					t.Fatalf("case %d %v: Find(%s) = %d, %d; want %d, %d", n, sets, a, s, k, wantSet, wantIdx)
				}
			}
		}
	}
}

// The overlap reported is the first in set order, whichever the neighbours
// are once sorted.
func TestFirstOverlapOrder(t *testing.T) {
	r := func(lo, hi string) RangeSet {
		set := RangeSet{{Subnet: netip.MustParsePrefix("10.0.0.0/24"), RangeStart: netip.MustParseAddr(lo), RangeEnd: netip.MustParseAddr(hi)}}
		if err := set.Canonicalize(); err != nil {
			t.Fatal(err)
		}
		return set
	}
	for _, tt := range []struct {
		name   string
		sets   []RangeSet
		wi, wj int
	}{
		{"third overlaps both", []RangeSet{r("10.0.0.20", "10.0.0.30"), r("10.0.0.1", "10.0.0.10"), r("10.0.0.5", "10.0.0.25")}, 2, 0},
		{"later pair found first when sorted", []RangeSet{r("10.0.0.100", "10.0.0.110"), r("10.0.0.50", "10.0.0.60"), r("10.0.0.55", "10.0.0.56"), r("10.0.0.1", "10.0.0.2"), r("10.0.0.2", "10.0.0.3")}, 2, 1},
		{"contained", []RangeSet{r("10.0.0.1", "10.0.0.200"), r("10.0.0.210", "10.0.0.220"), r("10.0.0.150", "10.0.0.151")}, 2, 0},
	} {
		if i, j, ok := FirstOverlap(tt.sets); !ok || i != tt.wi || j != tt.wj {
			t.Errorf("%s: got %d, %d, %v; want %d, %d, true", tt.name, i, j, ok, tt.wi, tt.wj)
		}
	}
}

func TestExclusionsMatchExcluded(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	pfx := func() netip.Prefix {
		switch rng.IntN(10) {
		case 0:
			return netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 15: byte(rng.IntN(64))}), 120+rng.IntN(9))
		case 1:
			return netip.PrefixFrom(netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: 10, 15: byte(rng.IntN(64))}), 122+rng.IntN(7))
		case 2:
			return netip.PrefixFrom(netip.AddrFrom4([4]byte{255, 255, 255, byte(240 + rng.IntN(16))}), 28+rng.IntN(5))
		}
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(rng.IntN(64))}), 26+rng.IntN(7))
	}
	probes := []netip.Addr{netip.MustParseAddr("fe80::1%eth0"), {}}
	for k := range 80 {
		probes = append(probes, netip.AddrFrom4([4]byte{10, 0, 0, byte(k)}), netip.AddrFrom4([4]byte{255, 255, 255, byte(176 + k)}),
			netip.AddrFrom16([16]byte{0xfd, 15: byte(k)}), netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: 10, 15: byte(k)}))
	}
	for n := range 2000 {
		ps := make([]netip.Prefix, rng.IntN(8))
		for k := range ps {
			ps[k] = pfx()
		}
		e := NewExclusions(ps)
		for _, ip := range probes {
			want, _ := Excluded(ip, ps)
			got, next := e.Excluded(ip)
			if got != want {
				t.Fatalf("case %d %v: Excluded(%s) = %v, want %v", n, ps, ip, got, want)
			}
			if !got {
				continue
			}
			// next ends the run of excluded addresses: all before it
			// are excluded, and it is not (or the space has ended).
			for a := ip; a != next && a.IsValid(); a = a.Next() {
				if ex, _ := Excluded(a, ps); !ex {
					t.Fatalf("case %d %v: from %s, next %s skips %s, which is not excluded", n, ps, ip, next, a)
				}
			}
			if ex, _ := Excluded(next, ps); next.IsValid() && ex {
				t.Fatalf("case %d %v: from %s, next %s is excluded too", n, ps, ip, next)
			}
		}
	}
}
