package ipamplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/disk"
)

// ls shows each lease's workload, namespace, host and whether it is of this
// boot; -o json carries every field.
func TestLsShowsLifecycle(t *testing.T) {
	t.Setenv("MACLAN_TEST_HOST_ID", "h1")
	t.Setenv("MACLAN_TEST_BOOT_ID", "b2")
	dir := t.TempDir()
	st, err := disk.New(dir, "net1", disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	created := time.Unix(1700000000, 0)
	leases := []store.Lease{
		{IP: netip.MustParseAddr("10.1.0.5"), ContainerID: "c1", IfName: "eth0", Created: created,
			Host: "h1", Boot: "b2", Netns: "/run/netns/c1", Workload: "k8s/shop/web-0", WorkloadUID: "u1"},
		{IP: netip.MustParseAddr("10.1.0.6"), ContainerID: "c0", IfName: "eth0", Created: created, Host: "h1", Boot: "b1"},
		{IP: netip.MustParseAddr("10.1.0.7"), ContainerID: "maclan-sticky-x", IfName: "eth0", Created: created,
			Workload: "k8s/shop/db-0", Released: created.Add(time.Minute)},
	}
	ctx := context.Background()
	err = store.WithLock(ctx, st, func() error {
		for _, l := range leases {
			if err := st.Reserve(ctx, l); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	var stdout, stderr bytes.Buffer
	if code := runCLI([]string{"ls", "--data-dir", dir, "-o", "json"}, &stdout, &stderr); code != 0 {
		t.Fatalf("ls -o json: exit %d, %s", code, stderr.String())
	}
	var rows []lsRow
	if err := json.Unmarshal(stdout.Bytes(), &rows); err != nil || len(rows) != 3 {
		t.Fatalf("ls -o json: %v, %d rows: %s", err, len(rows), stdout.String())
	}
	r := rows[0]
	if r.Host != "h1" || r.Boot != "b2" || !r.ThisBoot || r.Netns != "/run/netns/c1" || r.Workload != "k8s/shop/web-0" || r.WorkloadUID != "u1" {
		t.Errorf("row 0 = %+v", r)
	}
	if rows[1].ThisBoot {
		t.Errorf("a lease of boot b1 shows as of this boot: %+v", rows[1])
	}

	stdout.Reset()
	if code := runCLI([]string{"ls", "--data-dir", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("ls: exit %d, %s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"WORKLOAD", "k8s/shop/web-0", "/run/netns/c1", "this", "earlier", "held for k8s/shop/db-0"} {
		if !strings.Contains(out, want) {
			t.Errorf("ls table lacks %q:\n%s", want, out)
		}
	}
}
