package disk

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// v1Record is a lease record as version 1 wrote it.
func v1Record(ip, id string, created time.Time) []byte {
	r := leaseRecord{Version: 1, IP: ip, ContainerID: id, IfName: "eth0", Created: created.UTC()}
	r.Sum = r.sum()
	b, _ := json.Marshal(&r)
	return append(b, '\n')
}

func TestLifecycleFieldsRoundTrip(t *testing.T) {
	want := store.Lease{
		IP: netip.MustParseAddr("10.0.0.2"), ContainerID: "c1", IfName: "eth0", Created: time.Unix(1700000000, 5).UTC(),
		Host: "h1", Boot: "b1", Netns: "/run/netns/c1", Workload: "k8s/ns/web-0", WorkloadUID: "u1",
		Released: time.Unix(1700000100, 7).UTC(),
	}
	got, v, err := decodeLeaseVersion("10.0.0.2", encodeLease(want))
	if err != nil || v != leaseVersion {
		t.Fatalf("decode: version %d, %v", v, err)
	}
	if got != want {
		t.Errorf("round trip: got %+v, want %+v", got, want)
	}
}

func TestVersion1StaysReadableAndFsckUpgrades(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	do(t, s, func() error { return s.Reserve(bg, l("10.0.0.2", "c1")) })
	path := filepath.Join(dir, "net1", "leases", "10.0.0.2")
	if err := os.WriteFile(path, v1Record("10.0.0.2", "c1", time.Unix(1700000000, 0)), 0o600); err != nil {
		t.Fatal(err)
	}
	do(t, s, func() error {
		got, err := s.Get(bg, netip.MustParseAddr("10.0.0.2"))
		if err != nil || got.ContainerID != "c1" {
			t.Errorf("version 1 record: got %+v, %v", got, err)
		}
		return nil
	})
	if rep := fsck(t, s, false); kinds(rep) != "old-format" {
		t.Errorf("fsck: got %v, want one old-format", rep.Problems)
	}
	fsck(t, s, true)
	b, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(b), `"v":2`) {
		t.Errorf("after repair the record is %s (%v), want version 2", b, err)
	}
	if rep := fsck(t, s, false); len(rep.Problems) != 0 {
		t.Errorf("fsck after repair: %v", rep.Problems)
	}
}

func TestVersion1WithNewFieldsIsCorrupt(t *testing.T) {
	r := leaseRecord{Version: 1, IP: "10.0.0.2", ContainerID: "c1", IfName: "eth0", Created: time.Unix(1, 0).UTC(), Host: "h1"}
	r.Sum = r.sum()
	b, _ := json.Marshal(&r)
	if _, err := decodeLease("10.0.0.2", b); err == nil {
		t.Error("a version 1 record with a host decoded")
	}
}

func TestReserveRefusesInvalidUTF8(t *testing.T) {
	s := open(t, t.TempDir())
	bad := l("10.0.0.2", "c1")
	bad.Netns = "/run/netns/\xff"
	do(t, s, func() error {
		if err := s.Reserve(bg, bad); err == nil {
			t.Error("Reserve of a lease with an invalid UTF-8 netns succeeded; its record would read back as damaged")
		}
		return nil
	})
}
