package doctor

import (
	"strings"
	"testing"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

func TestLeaseLifecycleCounts(t *testing.T) {
	t.Setenv("MACLAN_TEST_HOST_ID", "h1")
	t.Setenv("MACLAN_TEST_BOOT_ID", "b2")
	leases := []store.Lease{
		{ContainerID: "old", Host: "h1", Boot: "b1"},                                   // earlier boot
		{ContainerID: "gone", Host: "h1", Boot: "b2", Netns: t.TempDir() + "/missing"}, // vanished
		{ContainerID: "live", Host: "h1", Boot: "b2", Netns: "/proc/self/ns/net"},
		{ContainerID: "other-host", Host: "h2", Boot: "b1"},
		{ContainerID: "legacy"},
	}
	rs := leaseLifecycle(leases)
	if len(rs) != 1 || rs[0].Status != Warn || !strings.Contains(rs[0].Saw, "1 leases of an earlier boot of this host and 1 of vanished namespaces") {
		t.Errorf("got %+v", rs)
	}
	if rs := leaseLifecycle(leases[2:]); rs[0].Status != OK {
		t.Errorf("healthy leases: got %+v", rs)
	}
}
