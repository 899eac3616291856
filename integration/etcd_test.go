//go:build integration

package integration

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
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
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/maclan-cni/maclan/pkg/ipam/store/etcdtest"
)

// The cluster-wide network: two hosts on the lab's switch, each with its
// own uplink and its own maclan-ipam lock directory (as two machines have),
// both using one etcd-backed network. etcd runs in the gateway namespace on
// the gateway's lab address, where both hosts reach it over the LAN.
//
//	switch ns:  br0 ─ p-host0 ── eth0 (host ns,  198.51.100.2)   host A
//	                ─ p-hostb ── eth0 (hostb ns, 198.51.100.3)   host B
//	                ─ p-gw ───── eth0 (gw ns,    198.51.100.1)   etcd :2379
const (
	hostB4     = "198.51.100.3"
	hostBPort  = "p-hostb"
	etcdClient = gw4 + ":2379"
)

// labHost is a host namespace from which plugins may run: host A (the
// lab's host) or host B. Its runner passes the same kind of guard as the
// lab's: the calling thread must be in this host's namespace and never in
// the machine's own.
type labHost struct {
	name    string
	ns      *netNS
	id      nsID
	lockDir string // maclan-ipam's per-host lock directory
}

func (h *labHost) check() error {
	cur, err := nsIDOf("/proc/thread-self/ns/net")
	if err != nil {
		return fmt.Errorf("safety guard: %w", err)
	}
	if slices.Contains(theLab.rootIDs, cur) {
		return errors.New("safety guard: refusing to run a plugin in the machine's own network namespace")
	}
	if cur != h.id {
		return fmt.Errorf("safety guard: refusing to run a plugin outside the lab host namespace %s", h.ns.name)
	}
	return nil
}

func (h *labHost) in(fn func() error) error {
	return h.ns.ns.Do(func(ns.NetNS) error {
		if err := h.check(); err != nil {
			return err
		}
		return fn()
	})
}

// hostExec starts plugins only from the host's namespace.
type hostExec struct {
	*invoke.DefaultExec
	h *labHost
}

func (e *hostExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	if err := e.h.check(); err != nil {
		return nil, err
	}
	return e.DefaultExec.ExecPlugin(ctx, pluginPath, stdin, environ)
}

func (h *labHost) cni(t *testing.T) *libcni.CNIConfig {
	exec := &hostExec{h: h, DefaultExec: &invoke.DefaultExec{
		RawExec:       &invoke.RawExec{Stderr: testLogWriter{t}},
		PluginDecoder: version.PluginDecoder{},
	}}
	return libcni.NewCNIConfigWithCacheDir([]string{theLab.binDir, theLab.toolsDir}, t.TempDir(), exec)
}

// hostA is the lab's own host namespace.
func hostA(t *testing.T) *labHost {
	return &labHost{name: "A", ns: theLab.host, id: theLab.hostID, lockDir: t.TempDir()}
}

// newHostB adds a second host namespace with its uplink on the switch,
// deleted when t ends.
func newHostB(t *testing.T) *labHost {
	t.Helper()
	n, err := theLab.addNetNS(fmt.Sprintf("hostb%d", theLab.seq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeContainer(t, n) })
	h := &labHost{name: "B", ns: n, lockDir: t.TempDir()}
	if h.id, err = nsIDOf(n.path); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(theLab.rootIDs, h.id) {
		t.Fatalf("lab host namespace %s is the machine's own", n.path)
	}
	sw := theLab.sw.name
	t.Cleanup(func() { _ = run("ip", "-n", sw, "link", "del", hostBPort) }) // gone with hostb already: nothing to do
	if err := ipSteps([][]string{
		{"-n", sw, "link", "add", hostBPort, "type", "veth", "peer", "name", masterIf, "netns", n.name},
		{"-n", sw, "link", "set", hostBPort, "master", bridgeName, "up"},
		{"-n", n.name, "link", "set", "lo", "up"},
		{"-n", n.name, "addr", "add", hostB4 + "/24", "dev", masterIf},
		{"-n", n.name, "link", "set", masterIf, "mtu", strconv.Itoa(masterMTU), "up"},
		{"-n", n.name, "route", "add", "default", "via", gw4, "dev", masterIf},
		// A host B of an earlier test had another MAC.
		{"-n", theLab.gw.name, "neigh", "flush", "to", hostB4},
	}); err != nil {
		t.Fatal(err)
	}
	wantPing(t, theLab.gw, hostB4)
	return h
}

// startLabEtcd runs etcd in the gateway namespace on the gateway's lab
// address; it is killed when t ends.
func startLabEtcd(t *testing.T) *etcdtest.Server {
	t.Helper()
	return etcdtest.Start(t, etcdtest.Options{
		ClientAddr: etcdClient,
		PeerAddr:   "127.0.0.1:2380",
		// etcd stands for a cluster on machines of its own; here it
		// shares two cores with 100 plugin processes, so it runs at a
		// higher priority and with raft timeouts that a starved run does
		// not trip (its internal request timeout is 5 s + 2 elections).
		Wrap: []string{"ip", "netns", "exec", theLab.gw.name, "nice", "-n", "-10"},
		Args: []string{"--heartbeat-interval", "500", "--election-timeout", "10000"},
		Health: func(string) error {
			var resp etcdHealth
			if err := etcdGateway(http.MethodGet, "/health", nil, &resp); err != nil {
				return err
			}
			if resp.Health != "true" {
				return fmt.Errorf("etcd health %q", resp.Health)
			}
			return nil
		},
	})
}

type etcdHealth struct {
	Health string `json:"health"`
}

// etcdGateway makes one HTTP request to etcd from the gateway namespace:
// the socket is made on a thread in that namespace, and HTTP/1.0 is spoken
// on it by hand, because net/http dials from goroutines of its own.
func etcdGateway(method, path string, body, out any) error {
	return theLab.gw.ns.Do(func(ns.NetNS) error {
		conn, err := net.DialTimeout("tcp", etcdClient, 2*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()                                     //nolint:errcheck // read side only after the request
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second)) // a hang guard
		var b []byte
		if body != nil {
			if b, err = json.Marshal(body); err != nil {
				return err
			}
		}
		if _, err := fmt.Fprintf(conn, "%s %s HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", method, path, etcdClient, len(b), b); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close() //nolint:errcheck // read-only
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd %s %s: %s", method, path, resp.Status)
		}
		return json.NewDecoder(resp.Body).Decode(out)
	})
}

// etcdKeys lists the keys under prefix through etcd's JSON gateway.
func etcdKeys(t *testing.T, prefix string) []string {
	t.Helper()
	end := []byte(prefix)
	end[len(end)-1]++
	req := map[string]any{
		"key":       base64.StdEncoding.EncodeToString([]byte(prefix)),
		"range_end": base64.StdEncoding.EncodeToString(end),
		"keys_only": true,
	}
	var resp struct {
		Kvs []struct {
			Key string `json:"key"`
		} `json:"kvs"`
	}
	if err := etcdGateway(http.MethodPost, "/v3/kv/range", req, &resp); err != nil {
		t.Fatalf("list etcd keys under %s: %v", prefix, err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		k, err := base64.StdEncoding.DecodeString(kv.Key)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, string(k))
	}
	return keys
}

// etcdNet is one etcd-backed network as host h configures it.
type etcdNet struct {
	name, prefix string
	// dialTimeout: long where 100 plugin processes connect at once on a
	// small machine (a hang guard), short where etcd is meant to be gone.
	dialTimeout string
}

func newEtcdNet(dialTimeout string) etcdNet {
	seq := theLab.seq.Add(1)
	return etcdNet{name: fmt.Sprintf("%s-e%d", theLab.prefix, seq), prefix: fmt.Sprintf("/maclan-lab/%s-%d", theLab.prefix, seq), dialTimeout: dialTimeout}
}

func (e etcdNet) list(t *testing.T, h *labHost) *libcni.NetworkConfigList {
	t.Helper()
	conf := map[string]any{
		"cniVersion": "1.1.0", "name": e.name,
		"plugins": []any{map[string]any{
			"type": pluginType, "master": masterIf, "mode": "bridge",
			"ipam": map[string]any{
				"type": ipamType,
				// 50 ADDs queue for each host's lock at once on a small
				// machine; this is a hang guard, not a latency target.
				"lockTimeout": "2m",
				"ranges":      []any{[]any{map[string]any{"subnet": subnet4, "rangeStart": rangeStart4, "rangeEnd": rangeEnd4, "gateway": gw4}}},
				"store": map[string]any{
					"type": "etcd", "endpoints": []string{"http://" + etcdClient},
					"prefix": e.prefix, "dialTimeout": e.dialTimeout, "dir": h.lockDir,
					// etcd shares two cores with 100 plugin processes: a
					// hang guard, not a latency target.
					"requestTimeout": "30s",
				},
			},
		}},
	}
	b, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	l, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// etcdAttachment is one container of one host on an etcd network.
type etcdAttachment struct {
	h    *labHost
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
	ctr  *netNS
	rt   *libcni.RuntimeConf
	res  *current.Result
	err  error
}

func (e etcdNet) attachments(t *testing.T, h *labHost, n int) []*etcdAttachment {
	t.Helper()
	list, cni := e.list(t, h), h.cni(t)
	out := make([]*etcdAttachment, n)
	for i := range out {
		c := newContainer(t)
		a := &etcdAttachment{h: h, cni: cni, list: list, ctr: c, rt: &libcni.RuntimeConf{ContainerID: c.name, NetNS: c.path, IfName: "eth0"}}
		t.Cleanup(func() {
			if err := a.del(); err != nil {
				t.Logf("cleanup DEL of %s on host %s: %v", c.name, h.name, err)
			}
		})
		out[i] = a
	}
	return out
}

func (a *etcdAttachment) add() {
	a.err = a.h.in(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
		defer cancel()
		res, err := a.cni.AddNetworkList(ctx, a.list, a.rt)
		if err != nil {
			return err
		}
		a.res, err = current.NewResultFromResult(res)
		return err
	})
}

func (a *etcdAttachment) del() error {
	return a.h.in(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
		defer cancel()
		return a.cni.DelNetworkList(ctx, a.list, a.rt)
	})
}

// status runs STATUS on the network from the attachment's host, as a
// runtime does now and then.
func (a *etcdAttachment) status() error {
	return a.h.in(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
		defer cancel()
		return a.cni.GetStatusNetworkList(ctx, a.list)
	})
}

func (a *etcdAttachment) ip(t *testing.T) string {
	t.Helper()
	if a.res == nil || len(a.res.IPs) != 1 {
		t.Fatalf("ADD result of %s: %+v", a.ctr.name, a.res)
	}
	return a.res.IPs[0].Address.IP.String()
}

// cli runs the maclan-ipam operator tool on the network from host A.
func (e etcdNet) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	args = append(args, "--network", e.name, "--etcd-endpoints", "http://"+etcdClient, "--etcd-prefix", e.prefix, "--data-dir", t.TempDir())
	var out []byte
	err := hostA(t).in(func() error {
		cmd := exec.Command(filepath.Join(theLab.binDir, ipamType), args...)
		cmd.Env = cleanEnv()
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	return string(out), err
}

// leases returns the network's leases, address → container ID.
// wantSettledLeases waits until the leases (address: container) that
// leases reads number as many as want, for at most 2 minutes (the
// reservations an interrupted ADD leaves expire after their TTL, 15 s),
// then reports every difference from want and returns how many leases no
// successful ADD holds.
func wantSettledLeases(t *testing.T, leases func() map[string]string, want map[string]string) (leftovers int) {
	t.Helper()
	var held map[string]string
	expiry := time.Now().Add(2 * time.Minute) // hang guard
	for {
		held = leases()
		if len(held) == len(want) || time.Now().After(expiry) {
			break
		}
		time.Sleep(200 * time.Millisecond) // polling the expiry of dropped reservations
	}
	for ip, ctr := range want {
		if held[ip] != ctr {
			t.Errorf("lease of %s: held by %q, want %s (its ADD succeeded)", ip, held[ip], ctr)
		}
	}
	for ip, ctr := range held {
		if want[ip] != ctr {
			leftovers++
			t.Errorf("lease of %s held by %s, whose ADD failed", ip, ctr)
		}
	}
	return leftovers
}

func (e etcdNet) leases(t *testing.T) map[string]string {
	t.Helper()
	out, err := e.cli(t, "ls", "-o", "json")
	if err != nil {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	return lsOwners(t, out)
}

// lsOwners reads `maclan-ipam ls -o json` output: address → container ID,
// reporting any address listed twice.
func lsOwners(t *testing.T, out string) map[string]string {
	t.Helper()
	var rows []struct {
		IP          string `json:"ip"`
		ContainerID string `json:"containerID"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("ls output %q: %v", out, err)
	}
	m := map[string]string{}
	for _, r := range rows {
		if prev, dup := m[r.IP]; dup {
			t.Errorf("ls lists %s twice (%s and %s)", r.IP, prev, r.ContainerID)
		}
		m[r.IP] = r.ContainerID
	}
	return m
}

// wantOnlyCursors checks that the network left no lease or index key in
// etcd; the cursor (a hint, as on disk) may stay.
func (e etcdNet) wantOnlyCursors(t *testing.T) {
	t.Helper()
	for _, k := range etcdKeys(t, e.prefix+"/") {
		if !strings.HasPrefix(k, e.prefix+"/"+e.name+"/cursor/") {
			t.Errorf("key %s left in etcd after DEL of every attachment", k)
		}
	}
}

func requireEtcd(t *testing.T) {
	t.Helper()
	if ipamType != "maclan-ipam" {
		t.Skip("the etcd store is maclan-ipam's")
	}
	if etcdtest.Binary() == "" {
		t.Skip("no etcd binary found (Debian package etcd-server)")
	}
}

// TestEtcdTwoHosts: 50 ADDs on each of two hosts at once get 100 distinct
// addresses from the shared network, containers on A reach containers on
// B, and DEL of everything leaves no key.
func TestEtcdTwoHosts(t *testing.T) {
	requireEtcd(t)
	startLabEtcd(t)
	a, b := hostA(t), newHostB(t)
	e := newEtcdNet("30s")
	const perHost = 50
	all := append(e.attachments(t, a, perHost), e.attachments(t, b, perHost)...)

	var wg sync.WaitGroup
	for _, at := range all {
		wg.Go(at.add)
	}
	wg.Wait()
	seen := map[string]string{}
	for _, at := range all {
		if at.err != nil {
			t.Fatalf("ADD %s on host %s: %v", at.ctr.name, at.h.name, at.err)
		}
		ip := at.ip(t)
		if other, dup := seen[ip]; dup {
			t.Errorf("%s handed to both %s and %s", ip, other, at.ctr.name)
		}
		seen[ip] = at.ctr.name
	}
	if len(seen) != 2*perHost {
		t.Errorf("got %d distinct addresses, want %d", len(seen), 2*perHost)
	}
	held := e.leases(t)
	if len(held) != 2*perHost {
		t.Errorf("etcd holds %d leases, want %d", len(held), 2*perHost)
	}
	for ip, ctr := range seen {
		if held[ip] != ctr {
			t.Errorf("lease of %s: held by %q, want %s", ip, held[ip], ctr)
		}
	}

	// Across the LAN: each container of A reaches one of B.
	for i := range perHost {
		wantPing(t, all[i].ctr, all[perHost+i].ip(t))
	}

	for _, at := range all {
		wg.Go(func() { at.err = at.del() })
	}
	wg.Wait()
	for _, at := range all {
		if at.err != nil {
			t.Errorf("DEL %s on host %s: %v", at.ctr.name, at.h.name, at.err)
		}
		wantOnlyLoopback(t, at.ctr)
	}
	e.wantOnlyCursors(t)
}

// TestEtcdStoppedMidBurst kills etcd while both hosts are adding
// containers: each ADD succeeds completely or fails with code 11 and
// leaves no lease and no link; once etcd is back, fsck finds nothing and
// no address is held twice.
func TestEtcdStoppedMidBurst(t *testing.T) {
	requireEtcd(t)
	srv := startLabEtcd(t)
	a, b := hostA(t), newHostB(t)
	e := newEtcdNet("1s")
	const perHost = 30
	all := append(e.attachments(t, a, perHost), e.attachments(t, b, perHost)...)

	var done atomic.Int64
	var wg sync.WaitGroup
	for _, at := range all {
		wg.Go(func() {
			at.add()
			done.Add(1)
		})
	}
	// Stop etcd once some ADDs have finished and most have not.
	deadline := time.Now().Add(pluginTimeout)
	for done.Load() < 5 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling the progress of the burst
	}
	srv.Stop()
	wg.Wait()
	srv.Restart()

	var ok, failed []*etcdAttachment
	for _, at := range all {
		switch {
		case at.err == nil:
			ok = append(ok, at)
		case cniCode(at.err) == 11:
			failed = append(failed, at)
			t.Logf("ADD %s on host %s: %v", at.ctr.name, at.h.name, at.err)
			if !strings.Contains(at.err.Error(), etcdClient) {
				t.Errorf("ADD %s: %v does not name etcd at %s", at.ctr.name, at.err, etcdClient)
			}
		default:
			t.Errorf("ADD %s on host %s: %v (code %d), want success or code 11", at.ctr.name, at.h.name, at.err, cniCode(at.err))
		}
	}
	t.Logf("with etcd killed mid-burst: %d ADDs succeeded, %d failed with code 11", len(ok), len(failed))
	if len(failed) == 0 {
		t.Log("etcd stopped after the burst: nothing failed (the fault part is vacuous this time)")
	}
	for _, at := range failed {
		wantOnlyLoopback(t, at.ctr)
	}

	// What a failed ADD reserved and could not make permanent expires, and
	// what it made permanent without hearing so (etcd died after logging
	// the commit) is deleted by the host's next call, here the runtime's
	// periodic STATUS: then only the successful ADDs hold leases.
	for _, at := range []*etcdAttachment{all[0], all[perHost]} {
		if err := at.status(); err != nil {
			t.Errorf("STATUS on host %s after etcd came back: %v", at.h.name, err)
		}
	}
	want := map[string]string{}
	for _, at := range ok {
		if other, dup := want[at.ip(t)]; dup {
			t.Errorf("%s handed to both %s and %s", at.ip(t), other, at.ctr.name)
		}
		want[at.ip(t)] = at.ctr.name
	}
	wantSettledLeases(t, func() map[string]string { return e.leases(t) }, want)
	if out, err := e.cli(t, "fsck"); err != nil || !strings.Contains(out, " 0 problems") {
		t.Errorf("fsck after etcd came back: %v\n%s", err, out)
	}
	for _, at := range all {
		if err := at.del(); err != nil {
			t.Errorf("DEL %s: %v", at.ctr.name, err)
		}
	}
	e.wantOnlyCursors(t)
}
