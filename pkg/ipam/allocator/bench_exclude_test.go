package allocator

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/maclan-cni/maclan/pkg/ipam/iprange"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/disk"
)

// BenchmarkFirstAllocateExcluded times the first ADD of a fresh allocator
// (as one run of the binary makes) when the n addresses after the gateway
// are each excluded on their own, so that the walk meets n exclusions in a
// row (security review issue 11, finding 6). The lease is released and the
// cursor put back after each ADD.
func BenchmarkFirstAllocateExcluded(b *testing.B) {
	for _, n := range []int{16000, 32000} {
		b.Run(fmt.Sprintf("exclusions=%d", n), func(b *testing.B) {
			s, err := disk.New(b.TempDir(), "bench", disk.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close() //nolint:errcheck // benchmark teardown
			set := iprange.RangeSet{{Subnet: netip.MustParsePrefix("10.128.0.0/14")}}
			if err := set.Canonicalize(); err != nil {
				b.Fatal(err)
			}
			gw := netip.MustParseAddr("10.128.0.1")
			exclude := make([]netip.Prefix, n)
			ip := gw.Next()
			for i := range exclude {
				exclude[i] = netip.PrefixFrom(ip, 32)
				ip = ip.Next()
			}
			want := ip
			for i := 0; b.Loop(); i++ {
				if err := store.WithLock(ctx, s, func() error { return s.SetCursor(ctx, "0", gw) }); err != nil {
					b.Fatal(err)
				}
				a := New(s, []iprange.RangeSet{set}, Options{Exclude: exclude})
				id := fmt.Sprintf("b%d", i)
				got, err := a.Allocate(ctx, id, "eth0", nil)
				if err != nil {
					b.Fatal(err)
				}
				if got[0].IP != want {
					b.Fatalf("got %s, want %s", got[0].IP, want)
				}
				if _, err := a.Release(ctx, id, "eth0"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
