//go:build integration

package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/maclan-cni/maclan/pkg/ipam/store/etcdtest"
)

// The cluster lab: three etcd members, each in a namespace of its own with
// an uplink on the lab's switch, speaking TLS to clients and peers with
// client certificates required; and simulated hosts, each a namespace with
// its own uplink, its own lock directory and its own host identity
// (MACLAN_TEST_HOST_ID), reaching the members over the LAN.
//
//	switch ns: br0 ─ p-em0 ── eth0 (etcdm0 ns, 198.51.100.11)  member m0 :2379 client, :2380 peer, :2381 metrics (http)
//	               ─ p-em1 ── eth0 (etcdm1 ns, 198.51.100.12)  member m1
//	               ─ p-em2 ── eth0 (etcdm2 ns, 198.51.100.13)  member m2
//	               ─ p-sh0 ── eth0 (sh0 ns,    198.51.100.21)  simulated host 0 (maclan master eth0)
//	               ─ ...       up to p-sh9, 198.51.100.30
const (
	memberBase4  = 11 // members at 198.51.100.11-.13
	simHostBase4 = 21 // simulated hosts at 198.51.100.21-.30
	maxSimHosts  = 10
)

// labCluster is a running three-member TLS cluster on the lab LAN.
type labCluster struct {
	*etcdtest.Cluster
	pki      *etcdtest.PKI
	nss      []*netNS
	ips      []string
	cert     string // a valid client certificate and its key
	key      string
	dataDirs []string
}

// clusterOpts tune startLabCluster.
type clusterOpts struct {
	// dataDir, if it returns non-empty, is member i's data directory.
	dataDir func(i int) string
}

// startLabCluster starts the three members; they are killed when t ends.
func startLabCluster(t *testing.T, o clusterOpts) *labCluster {
	t.Helper()
	requireEtcd(t)
	pki, err := etcdtest.NewPKI(t.TempDir(), "lab")
	if err != nil {
		t.Fatal(err)
	}
	c := &labCluster{pki: pki}
	if c.cert, c.key, err = pki.Issue("client", etcdtest.CertOptions{Client: true}); err != nil {
		t.Fatal(err)
	}
	var members []etcdtest.Options
	for i := range 3 {
		ip := fmt.Sprintf("198.51.100.%d", memberBase4+i)
		n := newLANNode(t, fmt.Sprintf("etcdm%d", i), fmt.Sprintf("p-em%d", i), ip)
		tc, err := pki.Member(fmt.Sprintf("m%d", i), net.ParseIP(ip))
		if err != nil {
			t.Fatal(err)
		}
		m := etcdtest.Options{
			Name: fmt.Sprintf("m%d", i), ClientAddr: ip + ":2379", PeerAddr: ip + ":2380", MetricsAddr: ip + ":2381", TLS: tc,
			// The members share two cores with the plugins: a higher
			// priority, and raft timers that a starved run does not trip
			// every few seconds, yet short enough that a lost leader is
			// replaced within a request timeout.
			Wrap:   []string{"ip", "netns", "exec", n.name, "nice", "-n", "-10"},
			Args:   []string{"--heartbeat-interval", "250", "--election-timeout", "2500"},
			Health: func(string) error { return memberHealthy(n, ip) },
		}
		if o.dataDir != nil {
			m.DataDir = o.dataDir(i)
		}
		members = append(members, m)
		c.nss, c.ips = append(c.nss, n), append(c.ips, ip)
	}
	c.Cluster = etcdtest.StartCluster(t, members)
	for _, m := range c.Members {
		c.dataDirs = append(c.dataDirs, m.DataDir())
	}
	return c
}

// newLANNode adds a namespace with an uplink eth0 on the lab switch
// (switch port port) at ip/24, deleted when t ends.
func newLANNode(t *testing.T, role, port, ip string) *netNS {
	t.Helper()
	n, err := theLab.addNetNS(fmt.Sprintf("%s-%d", role, theLab.seq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeContainer(t, n) })
	sw := theLab.sw.name
	t.Cleanup(func() { _ = run("ip", "-n", sw, "link", "del", port) }) // gone with the namespace already: nothing to do
	if err := ipSteps([][]string{
		{"-n", sw, "link", "add", port, "type", "veth", "peer", "name", masterIf, "netns", n.name},
		{"-n", sw, "link", "set", port, "master", bridgeName, "up"},
		{"-n", n.name, "link", "set", "lo", "up"},
		{"-n", n.name, "addr", "add", ip + "/24", "dev", masterIf},
		{"-n", n.name, "link", "set", masterIf, "mtu", strconv.Itoa(masterMTU), "up"},
		{"-n", n.name, "route", "add", "default", "via", gw4, "dev", masterIf},
		// An earlier test's node on this address had another MAC.
		{"-n", theLab.gw.name, "neigh", "flush", "to", ip},
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// nsHTTP makes one plain HTTP/1.0 request from namespace n (see
// etcdGateway for why by hand) and returns the body.
func nsHTTP(n *netNS, addr, path string) (string, error) {
	var body string
	err := n.ns.Do(func(ns.NetNS) error {
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()                                     //nolint:errcheck // read side only after the request
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second)) // a hang guard
		if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close() //nolint:errcheck // read-only
		var b strings.Builder
		_, err = bufio.NewReader(resp.Body).WriteTo(&b)
		body = b.String()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s%s: %s %s", addr, path, resp.Status, strings.TrimSpace(body))
		}
		return err
	})
	return body, err
}

func memberHealthy(n *netNS, ip string) error {
	body, err := nsHTTP(n, ip+":2381", "/health")
	if err != nil {
		return err
	}
	var h etcdHealth
	if err := json.Unmarshal([]byte(body), &h); err != nil || h.Health != "true" {
		return fmt.Errorf("etcd %s health %q", ip, body)
	}
	return nil
}

// metric sums the samples of a Prometheus metric whose labels contain
// every one of want, from member i's metrics listener.
func (c *labCluster) metric(i int, name string, want ...string) (float64, error) {
	body, err := nsHTTP(c.nss[i], c.ips[i]+":2381", "/metrics")
	if err != nil {
		return 0, err
	}
	var sum float64
	for line := range strings.Lines(body) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		series, val, ok := strings.Cut(line, " ")
		if !ok || (series != name && !strings.HasPrefix(series, name+"{")) {
			continue
		}
		if !allIn(series, want) {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum += v
	}
	return sum, nil
}

func allIn(s string, subs []string) bool {
	for _, w := range subs {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

// requests is the number of client requests the running members have
// served: unary gRPC calls (Range, Txn, LeaseGrant, LeaseRevoke, ...) and
// the messages of keep-alive streams are not counted, only unary calls.
func (c *labCluster) requests(t *testing.T) (total float64, byMethod map[string]float64) {
	t.Helper()
	byMethod = map[string]float64{}
	for i, m := range c.Members {
		if m.Exited() {
			continue
		}
		for _, meth := range []string{"Range", "Txn", "Put", "DeleteRange", "LeaseGrant", "LeaseRevoke", "Status", "MemberList"} {
			v, err := c.metric(i, "grpc_server_handled_total", `grpc_type="unary"`, `grpc_method="`+meth+`"`)
			if err != nil {
				t.Fatalf("metrics of %s: %v", m.Name(), err)
			}
			byMethod[meth] += v
			total += v
		}
	}
	return total, byMethod
}

// leader returns the index of the member that is leader, -1 if none of
// the running ones says so.
func (c *labCluster) leader() int {
	for i, m := range c.Members {
		if m.Exited() {
			continue
		}
		if v, err := c.metric(i, "etcd_server_is_leader"); err == nil && v == 1 {
			return i
		}
	}
	return -1
}

// waitLeader polls until a running member is leader (a hang guard of 2
// minutes) and returns it.
func (c *labCluster) waitLeader(t *testing.T) int {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if l := c.leader(); l >= 0 {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatal("no etcd leader after 2 minutes")
		}
		time.Sleep(50 * time.Millisecond) // polling an election
	}
}

// restart starts the given stopped members together (a quorum may need
// both) and waits for their health.
func (c *labCluster) restart(t *testing.T, idx ...int) {
	t.Helper()
	for _, i := range idx {
		if err := c.Members[i].Launch(); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range idx {
		if err := c.Members[i].WaitHealthy(); err != nil {
			t.Fatal(err)
		}
	}
}

// newSimHost adds simulated host i (0-9): a namespace with its own uplink
// at 198.51.100.(21+i), its own lock directory and host identity.
func newSimHost(t *testing.T, i int) *labHost {
	t.Helper()
	if i < 0 || i >= maxSimHosts {
		t.Fatalf("simulated host %d: only 0-%d", i, maxSimHosts-1)
	}
	n := newLANNode(t, fmt.Sprintf("sh%d", i), fmt.Sprintf("p-sh%d", i), fmt.Sprintf("198.51.100.%d", simHostBase4+i))
	h := &labHost{name: fmt.Sprintf("sim%d", i), ns: n, lockDir: t.TempDir()}
	var err error
	if h.id, err = nsIDOf(n.path); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(theLab.rootIDs, h.id) {
		t.Fatalf("lab host namespace %s is the machine's own", n.path)
	}
	return h
}

// hostIDExec is hostExec that gives every plugin the host's identity: one
// test process stands for many hosts, so the variable is set per exec,
// not in the process environment.
type hostIDExec struct{ hostExec }

func (e *hostIDExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	environ = append(slices.Clone(environ), "MACLAN_TEST_HOST_ID="+e.h.name)
	return e.hostExec.ExecPlugin(ctx, pluginPath, stdin, environ)
}

func simCNI(t *testing.T, h *labHost) *libcni.CNIConfig {
	exec := &hostIDExec{hostExec{h: h, DefaultExec: &invoke.DefaultExec{
		RawExec:       &invoke.RawExec{Stderr: testLogWriter{t}},
		PluginDecoder: version.PluginDecoder{},
	}}}
	return libcni.NewCNIConfigWithCacheDir([]string{theLab.binDir, theLab.toolsDir}, t.TempDir(), exec)
}

// clusterNet is one network on the cluster, as the simulated hosts
// configure it.
type clusterNet struct {
	name, prefix string
	endpoints    []string
	tls          map[string]any // nil: no "tls" object
	// Hang guards on a loaded two-core machine, not latency targets.
	dialTimeout, requestTimeout, lockTimeout string
	// first, last: the range, in subnet4 unless subnet is set.
	subnet, first, last, gateway string
	disk                         bool // the directory store instead (for comparison)
}

func (c *labCluster) newNet() *clusterNet {
	seq := theLab.seq.Add(1)
	var eps []string
	for _, ip := range c.ips {
		eps = append(eps, "https://"+ip+":2379")
	}
	return &clusterNet{
		name: fmt.Sprintf("%s-k%d", theLab.prefix, seq), prefix: fmt.Sprintf("/maclan-lab/%s-%d", theLab.prefix, seq),
		endpoints: eps, tls: map[string]any{"ca": c.pki.CAFile, "cert": c.cert, "key": c.key},
		dialTimeout: "5s", requestTimeout: "5s", lockTimeout: "1m",
		subnet: subnet4, first: rangeStart4, last: rangeEnd4, gateway: gw4,
	}
}

func (e *clusterNet) conf(h *labHost) map[string]any {
	st := map[string]any{"type": "disk", "dir": h.lockDir}
	if !e.disk {
		st = map[string]any{
			"type": "etcd", "endpoints": e.endpoints, "prefix": e.prefix, "dir": h.lockDir,
			"dialTimeout": e.dialTimeout, "requestTimeout": e.requestTimeout,
		}
		if e.tls != nil {
			st["tls"] = e.tls
		}
	}
	rng := map[string]any{"subnet": e.subnet, "rangeStart": e.first, "rangeEnd": e.last}
	if e.gateway != "" {
		rng["gateway"] = e.gateway
	}
	return map[string]any{
		"cniVersion": "1.1.0", "name": e.name,
		"plugins": []any{map[string]any{
			"type": pluginType, "master": masterIf, "mode": "bridge",
			"ipam": map[string]any{"type": ipamType, "lockTimeout": e.lockTimeout, "ranges": []any{[]any{rng}}, "store": st},
		}},
	}
}

func (e *clusterNet) list(t *testing.T, h *labHost) *libcni.NetworkConfigList {
	t.Helper()
	b, err := json.Marshal(e.conf(h))
	if err != nil {
		t.Fatal(err)
	}
	l, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// attachments makes n containers on host h; nothing is deleted at the end
// but the namespaces: the cluster and its data go with the test.
func (e *clusterNet) attachments(t *testing.T, h *labHost, n int) []*etcdAttachment {
	t.Helper()
	list, cni := e.list(t, h), simCNI(t, h)
	out := make([]*etcdAttachment, n)
	for i := range out {
		c := newContainer(t)
		out[i] = &etcdAttachment{h: h, cni: cni, list: list, ctr: c, rt: &libcni.RuntimeConf{ContainerID: c.name, NetNS: c.path, IfName: "eth0"}}
	}
	return out
}

// cli runs the operator tool on the network from host h.
func (e *clusterNet) cli(t *testing.T, h *labHost, args ...string) (string, error) {
	t.Helper()
	args = append(args, "--network", e.name, "--etcd-endpoints", strings.Join(e.endpoints, ","), "--etcd-prefix", e.prefix, "--data-dir", t.TempDir())
	if e.tls != nil {
		args = append(args, "--etcd-ca", e.tls["ca"].(string), "--etcd-cert", e.tls["cert"].(string), "--etcd-key", e.tls["key"].(string))
	}
	var out []byte
	err := h.in(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout) // a hang guard
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(theLab.binDir, ipamType), args...)
		cmd.Env = cleanEnv()
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	return string(out), err
}

// leases returns the network's leases, address → container ID, and
// reports any address listed twice.
func (e *clusterNet) leases(t *testing.T, h *labHost) map[string]string {
	t.Helper()
	out, err := e.cli(t, h, "ls", "-o", "json")
	if err != nil {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	return lsOwners(t, out)
}

// burst runs every attachment's ADD at once and calls fault once `after`
// of them have finished (or all have, for a small burst), in the test's
// goroutine; it returns when all ADDs are done.
func burst(all []*etcdAttachment, after int, fault func()) {
	var done atomic.Int64
	var wg sync.WaitGroup
	for _, at := range all {
		wg.Go(func() {
			at.add()
			done.Add(1)
		})
	}
	deadline := time.Now().Add(pluginTimeout) // a hang guard
	for done.Load() < int64(min(after, len(all))) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling the progress of the burst
	}
	if fault != nil {
		fault()
	}
	wg.Wait()
}
