package ipamconf

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ipam/iprange"
)

// The overlap check sorts the ranges once (security review issue 11,
// finding 6) but reports what checking each set against every earlier one
// in order reported: the first set that overlaps, the first set it
// overlaps, and a bad set only if no overlap comes before it.
func TestParseIPAMConfOverlapMessages(t *testing.T) {
	rg := func(lo, hi string) string {
		return `{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.` + lo + `","rangeEnd":"10.1.0.` + hi + `"}`
	}
	for _, tt := range []struct {
		name, ranges, want string
	}{
		{"third overlaps both", `[[` + rg("20", "30") + `],[` + rg("1", "10") + `],[` + rg("5", "25") + `]]`,
			"ipam.ranges[2] overlaps ipam.ranges[0]"},
		{"first pair in set order, not in address order",
			`[[` + rg("100", "110") + `],[` + rg("50", "60") + `],[` + rg("55", "56") + `],[` + rg("1", "2") + `],[` + rg("2", "3") + `]]`,
			"ipam.ranges[2] overlaps ipam.ranges[1]"},
		{"overlap before a bad set", `[[` + rg("1", "10") + `],[` + rg("10", "20") + `],[` + rg("9", "5") + `]]`,
			"ipam.ranges[1] overlaps ipam.ranges[0]"},
		{"bad set before an overlap", `[[` + rg("1", "10") + `],[` + rg("9", "5") + `],[` + rg("10", "20") + `]]`,
			"ipam.ranges[1]: range 0: rangeStart 10.1.0.9 is after rangeEnd 10.1.0.5 in subnet 10.1.0.0/24"},
		{"in one set", `[[` + rg("20", "30") + `,` + rg("1", "10") + `,` + rg("5", "25") + `]]`,
			"ipam.ranges[0]: range 2 (10.1.0.5-10.1.0.25) overlaps range 0 (10.1.0.20-10.1.0.30)"},
		{"in one set, before a bad range", `[[` + rg("1", "10") + `,` + rg("10", "10") + `,{"subnet":"fd00::/64"}]]`,
			"ipam.ranges[0]: range 1 (10.1.0.10-10.1.0.10) overlaps range 0 (10.1.0.1-10.1.0.10)"},
		{"in one set, after a bad range", `[[` + rg("1", "10") + `,{"subnet":"fd00::/64"},` + rg("10", "10") + `]]`,
			"ipam.ranges[0]: range 1 (fd00::/64) is not of the same address family as range 0 (10.1.0.0/24)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(ipamNet("1.0.0", `{"ranges":`+tt.ranges+`}`, "")), "")
			if err == nil || !errors.Is(err, config.ErrInvalid) || err.Error() != tt.want+": "+config.ErrInvalid.Error() {
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
}

// pairwiseSets is the check canonicalizeSets replaces.
func pairwiseSets(sets []iprange.RangeSet) error {
	for i, set := range sets {
		if err := set.Canonicalize(); err != nil {
			return invalid("ipam.ranges[%d]: %w", i, err)
		}
		for j := range i {
			if set.Overlaps(sets[j]) {
				return invalid("ipam.ranges[%d] overlaps ipam.ranges[%d]", i, j)
			}
		}
	}
	return nil
}

func TestCanonicalizeSetsMatchesPairwise(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	at := func(n int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 0, byte(n)}) }
	for n := range 3000 {
		var a, b []iprange.RangeSet
		for range 1 + rng.IntN(8) {
			var set iprange.RangeSet
			for range 1 + rng.IntN(3) {
				lo := 1 + rng.IntN(58)
				hi := lo + rng.IntN(5) - rng.IntN(2) // now and then start after end
				set = append(set, iprange.Range{Subnet: netip.MustParsePrefix("10.0.0.0/26"), RangeStart: at(lo), RangeEnd: at(hi)})
			}
			a, b = append(a, set), append(b, append(iprange.RangeSet{}, set...))
		}
		desc := fmt.Sprint(a)
		want, got := pairwiseSets(a), canonicalizeSets(b)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("case %d %s: got %v, want %v", n, desc, got, want)
		}
	}
}

// The same address asked for many times, from several sources, is one
// request, kept with its first source.
func TestRepeatedRequestsAreOne(t *testing.T) {
	ips := strings.Repeat(`"10.1.0.5",`, 1000) + `"10.1.0.5/24"`
	c, err := Parse([]byte(ipamNet("1.0.0", `{"ranges":[[{"subnet":"10.1.0.0/24"}]]}`,
		`"runtimeConfig":{"ips":[`+ips+`]},"args":{"cni":{"ips":["10.1.0.5"]}},`)), "IP=10.1.0.5,10.1.0.5")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Requested) != 1 || c.Requested[0].Source != "runtimeConfig.ips" || c.Requested[0].IP.String() != "10.1.0.5" {
		t.Errorf("got %+v, want 10.1.0.5 once, from runtimeConfig.ips", c.Requested)
	}
}
