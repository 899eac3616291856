package allocator

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/maclan-cni/maclan/pkg/ipam/iprange"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// countingStore counts the free-address lookups of a walk.
type countingStore struct {
	store.Store
	nextFree int
}

func (c *countingStore) NextFree(ctx context.Context, from, to netip.Addr) (netip.Addr, error) {
	c.nextFree++
	return c.Store.NextFree(ctx, from, to)
}

// A run of excluded addresses is stepped over at once, however many
// prefixes make it up (security review issue 11, finding 6): before, the
// walk asked the store and scanned the exclusion list once per prefix, all
// under the store's lock.
func TestExcludedRunIsOneStep(t *testing.T) {
	s := newStore(t)
	cs := &countingStore{Store: s}
	// 500 single addresses after the gateway, listed backwards, with a /30
	// among them.
	var exclude []netip.Prefix
	ip := netip.MustParseAddr("10.128.0.2")
	for range 500 {
		exclude = append(exclude, netip.PrefixFrom(ip, 32))
		ip = ip.Next()
	}
	slices.Reverse(exclude)
	exclude = append(exclude, netip.MustParsePrefix("10.128.0.100/30"))
	a := New(cs, sets(t, subnet("10.128.0.0/22")), Options{Exclude: exclude})
	got := mustAllocate(t, a, "c1")
	if want := ip.String(); got[0] != want {
		t.Errorf("got %v, want %s (the first address after the run)", got, want)
	}
	// Three lookups: the gateway .1 (reserved), .2 (excluded: the run
	// starts), then the address after the run.
	if cs.nextFree != 3 {
		t.Errorf("the walk asked the store for a free address %d times, want 3", cs.nextFree)
	}
}

// Exclusions do not change the order in which addresses are handed out:
// each range in turn, lowest address first, skipping the reserved and the
// excluded ones.
func TestExclusionsKeepAllocationOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for n := range 12 {
		s := newStore(t)
		set := sets(t, []iprange.Range{
			{Subnet: netip.MustParsePrefix("10.0.1.0/26")},
			{Subnet: netip.MustParsePrefix("10.0.0.0/26"), RangeStart: netip.MustParseAddr("10.0.0.10")},
		})
		var exclude []netip.Prefix
		for range rng.IntN(12) {
			a := netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(2)), byte(rng.IntN(64))})
			exclude = append(exclude, netip.PrefixFrom(a, 27+rng.IntN(6)).Masked())
		}
		var want []string
		for _, rg := range set[0] {
			for ip := rg.RangeStart; ip.Compare(rg.RangeEnd) <= 0; ip = ip.Next() {
				if ex, _ := iprange.Excluded(ip, exclude); !ex && !rg.Reserved(ip) {
					want = append(want, ip.String())
				}
			}
		}
		a := New(s, set, Options{Exclude: exclude})
		var got []string
		for i := 0; ; i++ {
			allocs, err := a.Allocate(ctx, fmt.Sprintf("c%d", i), "eth0", nil)
			if errors.Is(err, ErrExhausted) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, ips(allocs)...)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("case %d, exclude %v: got %v, want %v", n, exclude, got, want)
		}
	}
}
