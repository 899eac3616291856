//go:build integration

package integration

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/integration/samples"
)

// benchCluster is the cluster row of `make bench` (TestBench/cluster):
// simulated hosts on the lab LAN, each its own maclan host with its own
// lock directory, all adding their containers at once against the
// three-member TLS cluster; then the same with the directory store on
// each host, for comparison; then all the DELs. Sizes:
// MACLAN_BENCH_CLUSTER_HOSTS [10] x MACLAN_BENCH_CLUSTER_PER [100], at most
// 10 hosts. It also counts the etcd requests per ADD as the number of
// hosts adding at once grows (1, 2, 5, 10 hosts x 10 ADDs).
func benchCluster(t *testing.T, rep *benchReport) {
	nHosts := min(benchEnvInt("MACLAN_BENCH_CLUSTER_HOSTS", 10), maxSimHosts)
	per := benchEnvInt("MACLAN_BENCH_CLUSTER_PER", 100)
	c := startLabCluster(t, clusterOpts{})
	hosts := make([]*labHost, nHosts)
	for i := range hosts {
		hosts[i] = newSimHost(t, i)
	}
	add := rep.workload(fmt.Sprintf("cluster ADD, %d hosts x %d (maclan: etcd, 3 members, TLS; reference: disk store per host)", nHosts, per))
	del := rep.workload(fmt.Sprintf("cluster DEL, %d hosts x %d (maclan: etcd; reference: disk)", nHosts, per))
	for _, store := range []string{"etcd", "disk"} {
		e := benchClusterNet(c)
		e.disk = store == "disk"
		col := map[string]string{"etcd": "maclan", "disk": "reference"}[store]
		var all []*etcdAttachment
		for _, h := range hosts {
			all = append(all, e.attachments(t, h, per)...)
		}
		reqs0, _ := c.requests(t)
		wall, failed, dups := benchClusterOp(t, all, add, col, true, e.disk)
		reqs1, byMethod := c.requests(t)
		note := fmt.Sprintf("cluster %s: %d ADDs from %d hosts at once: wall to the last ADD %s, %d failed, %d duplicates",
			store, len(all), nHosts, wall.Round(time.Millisecond), failed, dups)
		if store == "etcd" {
			note += fmt.Sprintf(", %.1f etcd requests per ADD", (reqs1-reqs0)/float64(len(all)))
			t.Logf("etcd requests by method (all members, cumulative): %v", byMethod)
		}
		add.Notes = append(add.Notes, note)
		wall, failed, _ = benchClusterOp(t, all, del, col, false, false)
		del.Notes = append(del.Notes, fmt.Sprintf("cluster %s: %d DELs at once: wall %s, %d failed", store, len(all), wall.Round(time.Millisecond), failed))
		if store == "etcd" {
			if held := e.leases(t, hosts[0]); len(held) != 0 {
				t.Errorf("etcd holds %d leases after every DEL", len(held))
			}
		}
		for _, n := range append(add.Notes[len(add.Notes)-1:], del.Notes[len(del.Notes)-1:]...) {
			t.Log(n)
		}
		for _, at := range all {
			removeContainer(t, at.ctr)
		}
	}
	for _, k := range []int{1, 2, 5, 10} {
		if k > nHosts {
			break
		}
		e := benchClusterNet(c)
		var all []*etcdAttachment
		for _, h := range hosts[:k] {
			all = append(all, e.attachments(t, h, 10)...)
		}
		reqs0, m0 := c.requests(t)
		_, failed, _ := benchClusterOp(t, all, nil, "", true, false)
		reqs1, m1 := c.requests(t)
		diff := map[string]float64{}
		for k, v := range m1 {
			if d := v - m0[k]; d > 0 {
				diff[k] = d / float64(len(all))
			}
		}
		note := fmt.Sprintf("etcd requests per ADD with %d hosts x 10 at once: %.2f (per method %v), %d failed", k, (reqs1-reqs0)/float64(len(all)), diff, failed)
		add.Notes = append(add.Notes, note)
		t.Log(note)
		for _, at := range all {
			removeContainer(t, at.ctr)
		}
	}
}

// benchClusterNet is a network of 4,000 addresses on the lab LAN (no
// gateway: the containers only need their addresses), with hang guards
// long enough for 1,000 calls queued on a small machine.
func benchClusterNet(c *labCluster) *clusterNet {
	e := c.newNet()
	e.subnet, e.first, e.last, e.gateway = "10.77.0.0/20", "10.77.0.10", "10.77.15.250", ""
	e.dialTimeout, e.requestTimeout, e.lockTimeout = "30s", "30s", "5m"
	return e
}

// benchClusterOp runs ADD (or DEL) of every attachment at once and
// records each call's wall time in w's column col (w nil: not recorded).
// It returns the wall time to the last call, the failures and, for ADD,
// the addresses handed out twice (perHost: twice on one host, since each
// host's directory store knows nothing of the others').
func benchClusterOp(t *testing.T, all []*etcdAttachment, w *samples.Workload, col string, isAdd, perHost bool) (time.Duration, int, int) {
	took := make([]time.Duration, len(all))
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i, at := range all {
		wg.Go(func() {
			<-gate
			start := time.Now()
			if isAdd {
				at.add()
			} else {
				at.err = at.del()
			}
			took[i] = time.Since(start)
		})
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	wall := time.Since(start)
	failed, dups := 0, 0
	seen := map[string]bool{}
	for i, at := range all {
		if at.err != nil {
			failed++
			t.Logf("%s %s on %s: %v", map[bool]string{true: "ADD", false: "DEL"}[isAdd], at.ctr.name, at.h.name, at.err)
			continue
		}
		if w != nil {
			samples.AddTo(w.Ops, col, took[i], 0)
		}
		if isAdd {
			ip := at.ip(t)
			if perHost {
				ip = at.h.name + " " + ip
			}
			if seen[ip] {
				dups++
				t.Errorf("%s handed out twice", ip)
			}
			seen[ip] = true
		}
	}
	if w != nil && w.Ops[col] != nil {
		s := slices.Clone(w.Ops[col].WallUS)
		slices.Sort(s)
		t.Logf("%s %s: p50 %.1f ms, p99 %.1f ms over %d calls", col, w.Name, float64(s[len(s)/2])/1000, float64(s[len(s)*99/100])/1000, len(s))
	}
	return wall, failed, dups
}
