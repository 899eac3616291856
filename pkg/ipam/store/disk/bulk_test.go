package disk

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

func TestReleaseLeases(t *testing.T) {
	s := open(t, t.TempDir())
	two := l("10.0.0.3", "c2")
	two6 := two
	two6.IP = netip.MustParseAddr("fd00::3")
	do(t, s, func() error {
		for _, x := range []store.Lease{l("10.0.0.2", "c1"), two, two6, l("10.0.0.4", "c3")} {
			if err := s.Reserve(bg, x); err != nil {
				return err
			}
		}
		return nil
	})
	var got []netip.Addr
	do(t, s, func() error {
		all, err := s.List(bg)
		if err != nil {
			return err
		}
		got, err = s.ReleaseLeases(bg, slices.DeleteFunc(all, func(x store.Lease) bool { return x.ContainerID == "c3" }))
		return err
	})
	slices.SortFunc(got, netip.Addr.Compare)
	want := []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("fd00::3")}
	if !slices.Equal(got, want) {
		t.Errorf("released %v, want %v", got, want)
	}
	do(t, s, func() error {
		left, err := s.List(bg)
		if len(left) != 1 || left[0].ContainerID != "c3" {
			t.Errorf("left %v, want c3's lease", left)
		}
		for _, ip := range want {
			if free, err := s.NextFree(bg, ip, ip); err != nil || free != ip {
				t.Errorf("%s not free after the release (%v, %v)", ip, free, err)
			}
		}
		return err
	})
	if rep := fsck(t, s, false); len(rep.Problems) != 0 {
		t.Errorf("fsck after ReleaseLeases: %v", rep.Problems)
	}
}
