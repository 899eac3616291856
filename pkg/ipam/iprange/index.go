package iprange

import (
	"cmp"
	"net/netip"
	"slices"
	"sort"
)

// A configuration may list tens of thousands of ranges and exclusions (the
// runtime's ipRanges can come from a pod's annotations), so everything that
// compares them with one another sorts them once and then looks only at
// neighbours or binary-searches: O(n log n), never a loop in a loop.

// span is the inclusive block lo-hi of one family, with the index of the
// range set (owner) and of the range in it (idx) it came from.
type span struct {
	lo, hi     netip.Addr
	owner, idx int
}

// byStart orders spans by first address, IPv4 before IPv6 (the order of
// netip.Addr.Compare), then by owner.
func byStart(a, b span) int {
	if c := a.lo.Compare(b.lo); c != 0 {
		return c
	}
	return cmp.Compare(a.owner, b.owner)
}

// overlap reports whether two spans share an address. Blocks of different
// families never do: Compare puts every IPv4 address before every IPv6 one.
func (s span) overlap(o span) bool { return s.lo.Compare(o.hi) <= 0 && o.lo.Compare(s.hi) <= 0 }

// overlapBelow reports whether two of the spans whose owner is below n
// overlap. sorted is ordered by byStart. Among blocks sorted by start, two
// overlap if and only if two neighbours do: if no neighbours overlap, each
// block ends before the next begins.
func overlapBelow(sorted []span, n int) bool {
	var prev span
	have := false
	for _, s := range sorted {
		if s.owner >= n {
			continue
		}
		if have && prev.overlap(s) {
			return true
		}
		prev, have = s, true
	}
	return false
}

// firstOverlap returns the pair that a loop over each owner i, then each
// earlier owner j < i, would stop at first: the lowest owner i with a span
// that overlaps a span of a lower owner, and the lowest such owner j. The
// spans of one owner must not overlap one another. ok is false when no two
// spans overlap.
func firstOverlap(spans []span) (i, j int, ok bool) {
	n := 0
	for _, s := range spans {
		n = max(n, s.owner+1)
	}
	sorted := slices.Clone(spans)
	slices.SortFunc(sorted, byStart)
	if !overlapBelow(sorted, n) {
		return 0, 0, false
	}
	// Whether the owners below k overlap grows with k: search for the
	// first k at which they do; owner k-1 is then the culprit.
	i = sort.Search(n+1, func(k int) bool { return overlapBelow(sorted, k) }) - 1
	// The spans of the owners below i are disjoint and sorted, and so are
	// those of owner i: the pairs that overlap number fewer than both
	// together, and a binary search finds the first of each.
	var earlier []span
	for _, s := range sorted {
		if s.owner < i {
			earlier = append(earlier, s)
		}
	}
	j = i
	for _, s := range sorted {
		if s.owner != i {
			continue
		}
		k := sort.Search(len(earlier), func(k int) bool { return earlier[k].hi.Compare(s.lo) >= 0 })
		for ; k < len(earlier) && earlier[k].lo.Compare(s.hi) <= 0; k++ {
			j = min(j, earlier[k].owner)
		}
	}
	return i, j, true
}

// FirstOverlap checks canonicalized range sets against one another. It
// returns the first set that overlaps an earlier one and the first earlier
// set it overlaps, as comparing each set with every earlier one in order
// would find them; ok is false when no two sets overlap.
func FirstOverlap(sets []RangeSet) (i, j int, ok bool) {
	return firstOverlap(setSpans(sets))
}

func setSpans(sets []RangeSet) []span {
	var spans []span
	for i, set := range sets {
		for k, r := range set {
			spans = append(spans, span{lo: r.RangeStart, hi: r.RangeEnd, owner: i, idx: k})
		}
	}
	return spans
}

// Index finds which of many range sets holds an address by binary search.
// The sets must be canonicalized and must not overlap (see FirstOverlap).
type Index struct{ spans []span }

// NewIndex indexes the ranges of sets.
func NewIndex(sets []RangeSet) Index {
	spans := setSpans(sets)
	slices.SortFunc(spans, byStart)
	return Index{spans: spans}
}

// Find returns the indexes of the range set and of the range in it that
// hold ip, or -1, -1. It agrees with RangeSet.RangeFor.
func (x Index) Find(ip netip.Addr) (set, idx int) {
	if s, ok := find(x.spans, Canon(ip)); ok {
		return s.owner, s.idx
	}
	return -1, -1
}

// find returns the span of sorted, disjoint spans that holds ip.
func find(spans []span, ip netip.Addr) (span, bool) {
	k := sort.Search(len(spans), func(k int) bool { return spans[k].hi.Compare(ip) >= 0 })
	if k < len(spans) && spans[k].lo.Compare(ip) <= 0 {
		return spans[k], true
	}
	return span{}, false
}

// Exclusions are excluded prefixes merged into sorted, disjoint blocks, so
// that a lookup is a binary search and a walk steps over a whole run of
// excluded addresses (adjacent prefixes included) at once.
type Exclusions struct{ spans []span }

// NewExclusions merges the prefixes. Invalid prefixes are ignored.
func NewExclusions(prefixes []netip.Prefix) Exclusions {
	spans := make([]span, 0, len(prefixes))
	for _, p := range prefixes {
		if p.IsValid() {
			spans = append(spans, span{lo: p.Masked().Addr(), hi: Last(p)})
		}
	}
	slices.SortFunc(spans, byStart)
	var merged []span
	for _, s := range spans {
		if n := len(merged); n > 0 && touches(merged[n-1], s) {
			if s.hi.Compare(merged[n-1].hi) > 0 {
				merged[n-1].hi = s.hi
			}
			continue
		}
		merged = append(merged, s)
	}
	return Exclusions{spans: merged}
}

// touches reports whether b, which starts no earlier than a, overlaps a or
// starts just after it.
func touches(a, b span) bool {
	return a.lo.BitLen() == b.lo.BitLen() && (b.lo.Compare(a.hi) <= 0 || a.hi.Next() == b.lo)
}

// Excluded reports whether ip is excluded and, if so, returns the first
// address after the run of excluded addresses holding it (invalid when the
// run reaches the end of the address space). Like netip.Prefix.Contains,
// it matches an address only against prefixes of its own form: an
// IPv4-mapped address is not in an IPv4 prefix, and a zoned one is in none.
func (e Exclusions) Excluded(ip netip.Addr) (bool, netip.Addr) {
	if !ip.IsValid() || ip.Zone() != "" {
		return false, netip.Addr{}
	}
	if s, ok := find(e.spans, ip); ok {
		return true, s.hi.Next()
	}
	return false, netip.Addr{}
}
