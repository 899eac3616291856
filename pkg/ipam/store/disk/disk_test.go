package disk

import (
	"testing"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) func() store.Store {
		dir := t.TempDir()
		return func() store.Store {
			s, err := New(dir, "net1", Options{})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	})
}
