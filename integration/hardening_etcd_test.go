//go:build integration

package integration

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// etcdPut writes one key through etcd's JSON gateway, as another program
// sharing the prefix would.
func etcdPut(t *testing.T, key, value string) {
	t.Helper()
	req := map[string]any{
		"key":   base64.StdEncoding.EncodeToString([]byte(key)),
		"value": base64.StdEncoding.EncodeToString([]byte(value)),
	}
	var resp map[string]any
	if err := etcdGateway(http.MethodPost, "/v3/kv/put", req, &resp); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// TestHardeningEtcdStrayKeys: 300 keys of another program right after the
// lease key of the range's first address (an ADD used to spin on them for
// ever, under the host lock), and others beside the network's keys. Two
// ADDs through the plugins get distinct addresses; fsck --repair reports the stray keys and keeps them; DEL
// releases exactly the container's lease, a third ADD works, and after DEL
// of all no lease is left and every stray key is still there.
func TestHardeningEtcdStrayKeys(t *testing.T) {
	requireEtcd(t)
	startLabEtcd(t)
	a := hostA(t)
	e := newEtcdNet("30s")
	// Three stray keys below the lease key of every address of the range
	// (300 in all): wherever a host's walk starts (hosts sharing an etcd
	// network start at offsets of their own), its pages hold stray keys
	// and no lease key.
	root := e.prefix + "/" + e.name + "/"
	var stray []string
	for a := netip.MustParseAddr(rangeStart4); a.Compare(netip.MustParseAddr(rangeEnd4)) <= 0; a = a.Next() {
		b := a.As4()
		leaseKey := fmt.Sprintf("%slease/4-%02x%02x%02x%02x", root, b[0], b[1], b[2], b[3])
		for i := range 3 {
			stray = append(stray, fmt.Sprintf("%s/other/%03d", leaseKey, i))
		}
	}
	stray = append(stray, root+"config", root+"attach/readme", root+"cursor/a/b")
	for _, k := range stray {
		etcdPut(t, k, "not maclan's")
	}
	slices.Sort(stray)

	ats := e.attachments(t, a, 3)
	for _, at := range ats[:2] {
		if at.add(); at.err != nil {
			t.Fatalf("ADD %s beside stray keys: %v", at.ctr.name, at.err)
		}
	}
	ip0, ip1 := ats[0].ip(t), ats[1].ip(t)
	if ip1 == ip0 {
		t.Errorf("ADDs got %s and %s, want two addresses", ip0, ip1)
	}
	if held := e.leases(t); len(held) != 2 || held[ip0] != ats[0].ctr.name || held[ip1] != ats[1].ctr.name {
		t.Errorf("leases after ADD = %v, want %s and %s for the two containers", held, ip0, ip1)
	}
	out, err := e.cli(t, "fsck", "--repair")
	if err != nil || strings.Count(out, "foreign ") != len(stray) || strings.Contains(out, "(repaired)") {
		t.Errorf("fsck --repair beside stray keys: %v, want success and %d foreign keys left alone\n%s", err, len(stray), out)
	}

	if err := ats[0].del(); err != nil {
		t.Fatalf("DEL %s: %v", ats[0].ctr.name, err)
	}
	wantOnlyLoopback(t, ats[0].ctr)
	if held := e.leases(t); len(held) != 1 || held[ip1] != ats[1].ctr.name {
		t.Errorf("leases after DEL of %s = %v, want %s's only", ats[0].ctr.name, held, ats[1].ctr.name)
	}
	if ats[2].add(); ats[2].err != nil {
		t.Fatalf("ADD after DEL: %v", ats[2].err)
	}
	if ip2 := ats[2].ip(t); ip2 == ip1 {
		t.Errorf("ADD after DEL got %s, held by %s", ip2, ats[1].ctr.name)
	}
	for _, at := range ats[1:] {
		if err := at.del(); err != nil {
			t.Fatalf("DEL %s: %v", at.ctr.name, err)
		}
	}
	if held := e.leases(t); len(held) != 0 {
		t.Errorf("leases after DEL of every container = %v, want none", held)
	}
	var left []string
	for _, k := range etcdKeys(t, e.prefix+"/") {
		if maclanCursor := strings.HasPrefix(k, root+"cursor/") && !strings.Contains(strings.TrimPrefix(k, root+"cursor/"), "/"); !maclanCursor {
			left = append(left, k)
		}
	}
	slices.Sort(left)
	if !slices.Equal(left, stray) {
		t.Errorf("etcd holds %d keys besides cursors after DEL, want exactly the %d stray keys", len(left), len(stray))
	}
}
