package ipamplugin

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/maclan-cni/maclan/pkg/ipam/store/etcdtest"
)

// etcdConf is a dual-stack net conf on the etcd store at endpoint.
func etcdConf(dataDir, endpoint, prefix string) string {
	return netconf("1.1.0", dataDir, dualStack+fmt.Sprintf(`,"store":{"type":"etcd","endpoints":[%q],"prefix":%q,"dialTimeout":"500ms"}`, endpoint, prefix), "")
}

// TestEtcdStore drives the binary against a real etcd: ADD, idempotent
// ADD, CHECK, STATUS, ls, fsck, DEL; then STATUS and ADD with etcd gone.
func TestEtcdStore(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	dir := t.TempDir()
	conf := etcdConf(dir, srv.Endpoint(), "/cli")
	first := ok(t, call{cmd: "ADD", id: "c1", conf: conf})
	if again := ok(t, call{cmd: "ADD", id: "c1", conf: conf}); again != first {
		t.Errorf("repeated ADD = %s, want %s", again, first)
	}
	// Hosts sharing an etcd network start at an offset of their own
	// (allocator/spread.go): any address of the ranges will do.
	got := resultIPs(t, first)
	if len(got) != 2 || !inPrefix(got[0], "10.1.0.0/24") || !inPrefix(got[1], "fd00::/64") {
		t.Fatalf("ADD = %s, want one address of 10.1.0.0/24 and one of fd00::/64", first)
	}
	ip4, _, _ := strings.Cut(got[0], "/")
	ok(t, call{cmd: "CHECK", id: "c1", conf: conf})
	ok(t, call{cmd: "STATUS", conf: conf})

	etcdFlags := []string{"--data-dir", dir, "--etcd-endpoints", srv.Endpoint(), "--etcd-prefix", "/cli"}
	out, code := runCLIBinary(t, append([]string{"ls", "-o", "json"}, etcdFlags...)...)
	if code != 0 || !strings.Contains(out, `"ip": "`+ip4+`"`) || !strings.Contains(out, `"network": "net1"`) {
		t.Errorf("ls on etcd: exit %d\n%s", code, out)
	}
	out, code = runCLIBinary(t, append([]string{"fsck"}, etcdFlags...)...)
	if code != 0 || !strings.Contains(out, "net1: 2 leases, 1 attachments, 0 problems") {
		t.Errorf("fsck on etcd: exit %d\n%s", code, out)
	}
	ok(t, call{cmd: "DEL", id: "c1", conf: conf})
	ok(t, call{cmd: "DEL", id: "c1", conf: conf})
	out, _ = runCLIBinary(t, append([]string{"ls"}, etcdFlags...)...)
	if strings.Contains(out, ip4+" ") {
		t.Errorf("ls after DEL still shows the lease:\n%s", out)
	}

	srv.Stop()
	if code, msg := cniError(t, call{cmd: "STATUS", conf: conf}); code != 50 || !strings.Contains(msg, srv.Endpoint()) {
		t.Errorf("STATUS with etcd stopped = code %d %q, want 50 naming %s", code, msg, srv.Endpoint())
	}
	if code, msg := cniError(t, call{cmd: "ADD", id: "c2", conf: conf}); code != 11 || !strings.Contains(msg, srv.Endpoint()) {
		t.Errorf("ADD with etcd stopped = code %d %q, want 11 naming %s", code, msg, srv.Endpoint())
	}
}

// TestMigrateDiskToEtcd copies a host's directory store into etcd, twice.
func TestMigrateDiskToEtcd(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	dir := t.TempDir()
	disk := netconf("1.1.0", dir, dualStack, "")
	var want []string
	for i := range 3 {
		out := ok(t, call{cmd: "ADD", id: fmt.Sprintf("m%d", i), conf: disk})
		want = append(want, out)
	}
	args := []string{"migrate", "--from", "disk", "--to", "etcd", "--network", "net1", "--data-dir", dir, "--etcd-endpoints", srv.Endpoint(), "--etcd-prefix", "/mig"}
	for range 2 { // repeatable
		out, code := runCLIBinary(t, args...)
		if code != 0 || !strings.Contains(out, "6 of 6 leases") {
			t.Fatalf("migrate: exit %d\n%s", code, out)
		}
	}
	// The etcd-backed network now returns the same addresses.
	conf := etcdConf(dir, srv.Endpoint(), "/mig")
	for i := range 3 {
		if got := ok(t, call{cmd: "ADD", id: fmt.Sprintf("m%d", i), conf: conf}); got != want[i] {
			t.Errorf("ADD m%d on etcd after migrate = %s, want %s", i, got, want[i])
		}
	}
	// A new attachment does not get an address the disk store had handed out.
	fresh := resultIPs(t, ok(t, call{cmd: "ADD", id: "new", conf: conf}))
	for _, w := range want {
		for _, ip := range resultIPs(t, w) {
			if slices.Contains(fresh, ip) {
				t.Errorf("new ADD got %v, which reuses %s", fresh, ip)
			}
		}
	}
	if out, code := runCLIBinary(t, "migrate", "--from", "disk", "--to", "etcd", "--network", "net1"); code != 2 {
		t.Errorf("migrate without endpoints: exit %d, want 2\n%s", code, out)
	}
}

func resultIPs(t *testing.T, out string) []string {
	t.Helper()
	var res struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("result %q: %v", out, err)
	}
	var ips []string
	for _, ip := range res.IPs {
		ips = append(ips, ip.Address)
	}
	return ips
}

// TestEtcdStrayKeysCLI: 300 keys of another program under the network's
// lease prefix, right after the first candidate's key, and others beside
// them. ADD gets the first address (it used to spin on them), DEL releases
// it, fsck --repair reports them and leaves them, and they are all kept.
func TestEtcdStrayKeysCLI(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close() //nolint:errcheck // test
	stray := map[string]string{"/stray/net1/config": "someone else's", "/stray/net1/attach/c1=eth0/notes": "x"}
	for i := range 300 {
		stray[fmt.Sprintf("/stray/net1/lease/4-0a010002/other/%03d", i)] = "x"
	}
	ctx := context.Background()
	for k, v := range stray {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	conf := etcdConf(dir, srv.Endpoint(), "/stray")
	if got := resultIPs(t, ok(t, call{cmd: "ADD", id: "c1", conf: conf})); len(got) != 2 || !inPrefix(got[0], "10.1.0.0/24") || !inPrefix(got[1], "fd00::/64") {
		t.Errorf("ADD beside stray keys = %v, want one address of each range", got)
	}
	etcdFlags := []string{"--data-dir", dir, "--etcd-endpoints", srv.Endpoint(), "--etcd-prefix", "/stray"}
	out, code := runCLIBinary(t, append([]string{"fsck", "--repair"}, etcdFlags...)...)
	if code != 0 || strings.Count(out, "foreign ") != len(stray) || strings.Contains(out, "(repaired)") {
		t.Errorf("fsck --repair beside stray keys: exit %d, want 0 and %d foreign keys left alone\n%s", code, len(stray), out)
	}
	ok(t, call{cmd: "DEL", id: "c1", conf: conf})
	resp, err := cli.Get(ctx, "/stray/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	left := map[string]string{}
	for _, kv := range resp.Kvs {
		if !strings.HasPrefix(string(kv.Key), "/stray/net1/cursor/") {
			left[string(kv.Key)] = string(kv.Value)
		}
	}
	if !maps.Equal(left, stray) {
		t.Errorf("after DEL, etcd holds %d keys besides cursors, want exactly the %d stray keys", len(left), len(stray))
	}
}

// TestEtcdManyRangeSets: an attachment with an address in each of 100
// range sets is added and deleted through the binary; DEL used to fail
// for good above 60.
func TestEtcdManyRangeSets(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	var sets []string
	for i := range 100 {
		sets = append(sets, fmt.Sprintf(`[{"subnet":"10.%d.0.0/24"}]`, i))
	}
	dir := t.TempDir()
	conf := netconf("1.1.0", dir, `"ranges":[`+strings.Join(sets, ",")+fmt.Sprintf(`],"store":{"type":"etcd","endpoints":[%q],"prefix":"/many","dialTimeout":"500ms"}`, srv.Endpoint()), "")
	if got := resultIPs(t, ok(t, call{cmd: "ADD", id: "c1", conf: conf})); len(got) != 100 {
		t.Fatalf("ADD with 100 range sets = %d addresses, want 100", len(got))
	}
	ok(t, call{cmd: "DEL", id: "c1", conf: conf})
	out, code := runCLIBinary(t, "ls", "--data-dir", dir, "--etcd-endpoints", srv.Endpoint(), "--etcd-prefix", "/many")
	if code != 0 || strings.Contains(out, "10.") {
		t.Errorf("ls after DEL: exit %d, want no lease\n%s", code, out)
	}
}

// inPrefix reports whether the CIDR address a lies in prefix p.
func inPrefix(a, p string) bool {
	ip, err := netip.ParsePrefix(a)
	return err == nil && netip.MustParsePrefix(p).Contains(ip.Addr())
}
