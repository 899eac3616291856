package allocator

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/maclan-cni/maclan/pkg/ipam/iprange"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/disk"
)

// BenchmarkAllocateRelease times one ADD and one DEL in process, with the
// cursor put back before n existing leases each time, so that every ADD
// walks past all of them. Run with -benchtime=200x; the cost is fsync-bound
// and should not grow with n.
func BenchmarkAllocateRelease(b *testing.B) {
	for _, n := range []int{0, 1000, 10000, 50000} {
		b.Run(fmt.Sprintf("leases=%d", n), func(b *testing.B) {
			s, err := disk.New(b.TempDir(), "bench", disk.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close() //nolint:errcheck // benchmark teardown
			set := iprange.RangeSet{{Subnet: netip.MustParsePrefix("10.128.0.0/14")}}
			if err := set.Canonicalize(); err != nil {
				b.Fatal(err)
			}
			leases := make([]store.Lease, n)
			ip := netip.MustParseAddr("10.128.0.2")
			for i := range leases {
				leases[i] = store.Lease{IP: ip, ContainerID: fmt.Sprintf("pre-%d", i), IfName: "eth0"}
				ip = ip.Next()
			}
			if err := store.WithLock(ctx, s, func() error { _, err := s.Import(ctx, leases); return err }); err != nil {
				b.Fatal(err)
			}
			a := New(s, []iprange.RangeSet{set}, Options{})
			gw := netip.MustParseAddr("10.128.0.1")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := store.WithLock(ctx, s, func() error { return s.SetCursor(ctx, "0", gw) }); err != nil {
					b.Fatal(err)
				}
				id := fmt.Sprintf("b%d", i)
				if _, err := a.Allocate(ctx, id, "eth0", nil); err != nil {
					b.Fatal(err)
				}
				if _, err := a.Release(ctx, id, "eth0"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
