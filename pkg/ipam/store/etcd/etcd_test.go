package etcd

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/etcdtest"
	"github.com/maclan-cni/maclan/pkg/ipam/store/storetest"
)

// seq gives each test its own key prefix on the shared server.
var seq atomic.Int64

func testOptions(t *testing.T, srv *etcdtest.Server) Options {
	return Options{
		Endpoints: []string{srv.Endpoint()},
		Prefix:    fmt.Sprintf("/t%d", seq.Add(1)),
		LockDir:   t.TempDir(),
	}
}

func open(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := New("net1", opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	storetest.Run(t, func(t *testing.T) func() store.Store {
		opts := testOptions(t, srv)
		return func() store.Store { return open(t, opts) }
	})
}
