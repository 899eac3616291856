//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// TestReliabilitySoak runs MACLAN_SOAK_CYCLES (1,000) ADD/DEL cycles through
// maclan + maclan-ipam, dual stack, from MACLAN_SOAK_WORKERS (32) parallel
// workers, each with a container namespace of its own that it reuses with a
// new container ID per cycle (so a leftover link would make the next ADD
// fail). Each cycle: ADD, ping the gateway from the container, DEL, check
// that only lo is left. An observer checks, while the workers run, that no
// address is held by two live containers: in the test's own registry (at
// every ADD), in the IPAM's lease files, and in the kernel (the addresses on
// each live container's eth0). At the end no lease and no macvlan is left,
// and fsck finds the store clean.
func TestReliabilitySoak(t *testing.T) {
	needLong(t)
	workers := envInt(t, "MACLAN_SOAK_WORKERS", 32)
	cycles := envInt(t, "MACLAN_SOAK_CYCLES", 1000)

	// All workers share one network, so every IPAM call queues for its
	// store lock. The soak runs with the default lockTimeout (10 s): since
	// the lock is waited for in the kernel, the longest ADD here takes about
	// 3 s. MACLAN_SOAK_LOCK_TIMEOUT sets another, for experiments.
	lockWait := os.Getenv("MACLAN_SOAK_LOCK_TIMEOUT")
	n := newNet(t)
	conf := n.mainConf()
	if lockWait != "" {
		conf["ipam"].(map[string]any)["lockTimeout"] = lockWait
	} else {
		lockWait = "10s (default)"
	}
	list := n.list("1.1.0", conf)
	ctrs := make([]*netNS, workers)
	for i := range ctrs {
		ctrs[i] = newContainer(t)
	}
	reg := &soakRegistry{live: map[string]*soakLive{}, byIP: map[netip.Addr]string{}}

	var (
		next, failures, pingFails, leftovers atomic.Int64
		addDur, delDur                       durStats
		distinct                             sync.Map
	)
	var tryAgain atomic.Int64
	fail := func(format string, args ...any) {
		for _, a := range args {
			if err, ok := a.(error); ok && cniCode(err) == 11 {
				tryAgain.Add(1)
			}
		}
		if failures.Add(1) <= 20 {
			t.Errorf(format, args...)
		}
	}

	obsDone := make(chan struct{})
	obsResult := make(chan soakObserved, 1)
	go func() { obsResult <- reg.observe(n, obsDone) }()

	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := ctrs[w]
			for {
				j := next.Add(1) - 1
				if j >= int64(cycles) {
					return
				}
				a := n.attach(list, c, "eth0")
				a.rt.ContainerID = fmt.Sprintf("%s-soak%d", theLab.prefix, j)
				a.cleanupSet = true // DEL is part of the cycle, not of the test's cleanup
				t0 := time.Now()
				res, err := a.addNoCleanup()
				addDur.add(time.Since(t0))
				if err != nil {
					fail("cycle %d: ADD: %v", j, err)
				} else {
					ips := resultAddrs(res)
					for _, ip := range ips {
						distinct.Store(ip, true)
					}
					if len(ips) != 2 {
						fail("cycle %d: ADD gave %v, want one IPv4 and one IPv6 address", j, ips)
					}
					if dup := reg.register(a.rt.ContainerID, c, ips); dup != "" {
						fail("cycle %d: %s", j, dup)
					}
					if err := pingOnce(c, gw4); err != nil {
						pingFails.Add(1)
						fail("cycle %d: %v", j, err)
					}
					reg.unregister(a.rt.ContainerID)
				}
				t0 = time.Now()
				if err := a.del(); err != nil {
					fail("cycle %d: DEL: %v", j, err)
				}
				delDur.add(time.Since(t0))
				if names := soakLinkNames(c); len(names) != 1 || names[0] != "lo" {
					leftovers.Add(1)
					fail("cycle %d: links in %s after DEL: %v, want only [lo]", j, c.name, names)
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	close(obsDone)
	obs := <-obsResult
	for _, v := range obs.violations {
		t.Error(v)
	}

	n.wantNoLeases()
	if owners := n.leasesByOwner(); len(owners) != 0 {
		t.Errorf("maclan-ipam ls after the soak: %v, want no lease", owners)
	}
	n.wantFsckClean()
	if mv := hostMacvlans(t); len(mv) != 0 {
		t.Errorf("macvlans left in the host namespace: %v", mv)
	}
	nDistinct := 0
	distinct.Range(func(any, any) bool { nDistinct++; return true })

	figure(t, "%d workers, %d ADD/DEL cycles in %.1f s: %.1f cycles/s (lockTimeout %s)", workers, cycles, wall.Seconds(), float64(cycles)/wall.Seconds(), lockWait)
	figure(t, "failures %d (code 11 %d, ping failures %d, leftover links %d); duplicate addresses seen by the observer %d in %d scans (%d live-container samples, at most %d live at once)",
		failures.Load(), tryAgain.Load(), pingFails.Load(), leftovers.Load(), len(obs.violations), obs.scans, obs.samples, obs.maxLive)
	figure(t, "ADD %s", &addDur)
	figure(t, "DEL %s", &delDur)
	figure(t, "distinct addresses handed out %d; leases left %d; macvlans left %d", nDistinct, len(n.heldLeases()), len(hostMacvlans(t)))
}

// addNoCleanup runs ADD through libcni without registering a DEL for the end
// of the test (the caller owns the DEL).
func (a *attachment) addNoCleanup() (*current.Result, error) {
	var res *current.Result
	err := theLab.inHost(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
		defer cancel()
		r, err := a.net.cni.AddNetworkList(ctx, a.list, a.rt)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	return res, err
}

func resultAddrs(res *current.Result) []netip.Addr {
	var ips []netip.Addr
	for _, ipc := range res.IPs {
		if ip, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			ips = append(ips, ip.Unmap())
		}
	}
	return ips
}

// soakLinkNames lists the links of a container namespace through a handle
// of its own (the worker's namespace handle is not shared with the
// observer).
func soakLinkNames(c *netNS) []string {
	h, err := soakHandle(c.path)
	if err != nil {
		return []string{err.Error()}
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return []string{err.Error()}
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

func soakHandle(path string) (netlinksafe.Handle, error) {
	fd, err := netns.GetFromPath(path)
	if err != nil {
		return netlinksafe.Handle{}, err
	}
	defer fd.Close()
	return netlinksafe.NewHandleAt(fd)
}

// soakRegistry is the test's record of the live containers: registered
// after ADD returned, unregistered before DEL starts. While a container is
// registered, its addresses must be its alone everywhere.
type soakRegistry struct {
	mu   sync.Mutex
	gen  int64
	live map[string]*soakLive  // container ID -> its attachment
	byIP map[netip.Addr]string // address -> container ID
}

type soakLive struct {
	gen int64
	ctr *netNS
	ips []netip.Addr
}

// register records a live container; it returns a description of a
// duplicate if another live container holds one of its addresses.
func (r *soakRegistry) register(id string, c *netNS, ips []netip.Addr) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	dup := ""
	for _, ip := range ips {
		if other, ok := r.byIP[ip]; ok {
			dup = fmt.Sprintf("duplicate address %s: ADD gave it to %s while %s holds it", ip, id, other)
		}
		r.byIP[ip] = id
	}
	r.gen++
	r.live[id] = &soakLive{gen: r.gen, ctr: c, ips: ips}
	return dup
}

func (r *soakRegistry) unregister(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l := r.live[id]; l != nil {
		for _, ip := range l.ips {
			if r.byIP[ip] == id {
				delete(r.byIP, ip)
			}
		}
	}
	delete(r.live, id)
}

func (r *soakRegistry) snapshot() map[string]soakLive {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := make(map[string]soakLive, len(r.live))
	for id, l := range r.live {
		s[id] = *l
	}
	return s
}

// stillLive reports whether id is still the same registration.
func (r *soakRegistry) stillLive(id string, gen int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.live[id]
	return l != nil && l.gen == gen
}

type soakObserved struct {
	scans, samples, maxLive int
	violations              []string
}

// observe scans until done: for every live container, the lease file of each
// of its addresses must name it, and the addresses on its eth0 must be its
// own and held by no other live container. A sample counts only if the
// container was live for the whole of its read.
func (r *soakRegistry) observe(n *testNet, done <-chan struct{}) soakObserved {
	var o soakObserved
	leaseDir := filepath.Join(n.dataDir, n.name, "leases")
	tick := time.NewTicker(5 * time.Millisecond) // the observer's scan interval
	defer tick.Stop()
	violate := func(format string, args ...any) {
		if len(o.violations) < 20 {
			o.violations = append(o.violations, fmt.Sprintf(format, args...))
		}
	}
	for {
		select {
		case <-done:
			return o
		case <-tick.C:
		}
		snap := r.snapshot()
		o.scans++
		o.maxLive = max(o.maxLive, len(snap))
		kernel := map[netip.Addr][]string{}
		for id, l := range snap {
			owners := map[netip.Addr]string{}
			for _, ip := range l.ips {
				owners[ip] = leaseOwner(filepath.Join(leaseDir, ip.String()))
			}
			addrs, kerr := soakAddrs(l.ctr.path)
			if !r.stillLive(id, l.gen) {
				continue // DEL may have started during the read
			}
			o.samples++
			for ip, owner := range owners {
				if owner != id {
					violate("observer: %s is live with %s, but the lease of %s names %q", id, ip, ip, owner)
				}
			}
			if kerr != nil {
				violate("observer: addresses of live %s in %s: %v", id, l.ctr.name, kerr)
				continue
			}
			for _, ip := range addrs {
				kernel[ip] = append(kernel[ip], id)
			}
		}
		for ip, ids := range kernel {
			if len(ids) > 1 {
				violate("observer: %s is on the eth0 of %d live containers at once: %v", ip, len(ids), ids)
			}
		}
	}
}

// leaseOwner reads the container ID of a lease file ("" if absent).
func leaseOwner(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	var l struct {
		ContainerID string `json:"containerID"`
	}
	if json.Unmarshal(b, &l) != nil {
		return "<undecodable lease>"
	}
	return l.ContainerID
}

// soakAddrs lists the global addresses on eth0 in the namespace at path.
func soakAddrs(path string) ([]netip.Addr, error) {
	h, err := soakHandle(path)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	link, err := h.LinkByName("eth0")
	if err != nil {
		return nil, err
	}
	list, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	for _, a := range list {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && a.Scope == 0 {
			ips = append(ips, ip.Unmap())
		}
	}
	return ips, nil
}
