package iprange

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

// FuzzParseAddrs feeds both string parsers (requested addresses and
// exclusions) arbitrary text. Whatever they accept must be canonical (no
// IPv4-mapped form, no zone; a masked prefix) and parse back to itself.
func FuzzParseAddrs(f *testing.F) {
	for _, s := range []string{"10.0.0.5", "10.0.0.5/24", "::ffff:10.0.0.5/120", "fd00::1%eth0", "fe80::1/64", "10.0.0.300", "::ffff:1.2.3.4/0", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 256 {
			return
		}
		if a, err := ParseAddrOrPrefix(s); err == nil {
			if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
				t.Fatalf("ParseAddrOrPrefix(%q) = %v: not canonical", s, a)
			}
			if b, err := ParseAddrOrPrefix(a.String()); err != nil || b != a {
				t.Fatalf("ParseAddrOrPrefix(%q) = %v, which parses back as %v, %v", s, a, b, err)
			}
		}
		if p, err := ParsePrefixOrAddr(s); err == nil {
			if !p.IsValid() || p.Addr().Is4In6() || p != p.Masked() {
				t.Fatalf("ParsePrefixOrAddr(%q) = %v: not canonical", s, p)
			}
			if q, err := ParsePrefixOrAddr(p.String()); err != nil || q != p {
				t.Fatalf("ParsePrefixOrAddr(%q) = %v, which parses back as %v, %v", s, p, q, err)
			}
		}
	})
}

// FuzzRangeSet decodes a range set from JSON, as a configuration carries
// it, and a list of exclusions, as "exclude" does. A set that canonicalizes
// must be consistent and free of overlaps, and the sorted lookups must
// agree with the plain ones.
func FuzzRangeSet(f *testing.F) {
	f.Add([]byte(`[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.10","rangeEnd":"10.0.0.20"},{"subnet":"10.0.1.0/24"}]`), "10.0.0.12,10.0.0.16/30,10.0.1.0/25")
	f.Add([]byte(`[{"subnet":"fd00::/120","gateway":"fd00::1"},{"subnet":"fd00::/120","rangeStart":"fd00::80"}]`), "fd00::/121")
	f.Add([]byte(`[{"subnet":"::ffff:10.1.0.0/120"},{"subnet":"10.1.0.0/24"}]`), "::ffff:10.1.0.7")
	f.Fuzz(func(t *testing.T, data []byte, exclude string) {
		if len(data) > 1<<12 || len(exclude) > 1<<10 {
			return
		}
		var set RangeSet
		if json.Unmarshal(data, &set) != nil {
			return
		}
		var prefixes []netip.Prefix
		for _, s := range strings.Split(exclude, ",") {
			if p, err := ParsePrefixOrAddr(s); err == nil {
				prefixes = append(prefixes, p)
			}
		}
		want := pairwiseCanonicalize(append(RangeSet{}, set...))
		if err := set.Canonicalize(); errString(err) != errString(want) {
			t.Fatalf("Canonicalize: got %v, pairwise check %v", err, want)
		} else if err != nil {
			return
		}
		for i, r := range set {
			if !r.Subnet.Contains(r.RangeStart) || !r.Subnet.Contains(r.RangeEnd) || r.RangeStart.Compare(r.RangeEnd) > 0 || !r.Subnet.Contains(r.Gateway) {
				t.Fatalf("range %d inconsistent: %+v", i, r)
			}
		}
		x, e := NewIndex([]RangeSet{set}), NewExclusions(prefixes)
		for _, r := range set {
			for _, ip := range []netip.Addr{r.RangeStart, r.RangeStart.Prev(), r.RangeEnd, r.RangeEnd.Next(), r.Gateway} {
				if _, k := x.Find(ip); k != set.RangeFor(ip) {
					t.Fatalf("Find(%s) = %d, RangeFor %d", ip, k, set.RangeFor(ip))
				}
				got, next := e.Excluded(ip)
				if want, _ := Excluded(ip, prefixes); got != want {
					t.Fatalf("Exclusions.Excluded(%s) = %v, Excluded %v", ip, got, want)
				}
				if ex, _ := Excluded(next, prefixes); got && next.IsValid() && ex {
					t.Fatalf("Exclusions.Excluded(%s) jumps to %s, which is excluded", ip, next)
				}
			}
		}
	})
}
