package doctor

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/holder"
	"github.com/maclan-cni/maclan/pkg/ipam/ipamconf"
	"github.com/maclan-cni/maclan/pkg/ipam/iprange"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/disk"
)

// storeLockWait bounds the wait for the store lock: a doctor must not
// queue behind a stuck call for long.
const storeLockWait = 5 * time.Second

// poolWarn is the share of a range set in use from which the pool check
// warns; a full set fails (the next ADD gets no address).
const poolWarn = 0.90

// checkStore reads the network's lease store without changing it: whether
// it is readable and fsck-clean (no repair), how full each range set is,
// and (later) leases that outlived their boot or namespace. It returns the
// leases it could read.
func checkStore(t *target, etcdTool string) ([]Result, []store.Lease) {
	if t.ipam == nil {
		if t.ipamErr != nil {
			return []Result{fail("store", "correct the \"ipam\" object; maclan-ipam refuses it with the same words", "%v", t.ipamErr)}, nil
		}
		return []Result{skip("store", "ipam type %q keeps no maclan store", t.conf.IPAM.Type)}, nil
	}
	if t.conf.IPAM.Type != "maclan-ipam" {
		return []Result{skip("store", "ipam type %q: its store is not read", t.conf.IPAM.Type)}, nil
	}
	var leases []store.Lease
	var rs []Result
	if t.ipam.Store.Type == "etcd" {
		rs, leases = etcdStore(t, etcdTool)
	} else {
		rs, leases = diskStore(t)
	}
	rs = append(rs, poolUsage(t.ipam, leases)...)
	return append(rs, leaseLifecycle(leases)...), leases
}

func diskStore(t *target) ([]Result, []store.Lease) {
	dir := filepath.Join(t.ipam.Store.Dir, t.network)
	if _, err := os.Stat(filepath.Join(dir, "leases")); errors.Is(err, os.ErrNotExist) {
		return []Result{ok("store", "no store yet under %s: no container has been attached", dir)}, nil
	}
	st, err := disk.New(t.ipam.Store.Dir, t.network, disk.Options{LockTimeout: storeLockWait})
	if err != nil {
		return []Result{fail("store", "check the permissions and the file system of the data directory", "%s: %v", dir, err)}, nil
	}
	defer st.Close()
	ctx := context.Background()
	var rep store.FsckReport
	var leases []store.Lease
	var listErr error
	err = store.WithLock(ctx, st, func() error {
		var ferr error
		if rep, ferr = st.Fsck(ctx, false); ferr != nil {
			return ferr
		}
		leases, listErr = st.List(ctx)
		return nil
	})
	switch {
	case errors.Is(err, store.ErrLockTimeout):
		return []Result{warn("store", fmt.Sprintf("if it lasts, find the process that holds %s/lock (fuser -v)", dir),
			"%s: another call held the store lock for more than %s", dir, storeLockWait)}, nil
	case err != nil:
		return []Result{fail("store", "check the permissions and the file system of the data directory", "%s: %v", dir, err)}, nil
	}
	return []Result{fsckResult(t, dir, rep, listErr)}, leases
}

func fsckResult(t *target, dir string, rep store.FsckReport, listErr error) Result {
	if len(rep.Problems) == 0 && listErr == nil {
		return ok("store", "%s is readable and fsck-clean: %d leases, %d attachments", dir, rep.Leases, rep.Attachments)
	}
	var ps []string
	for i, p := range rep.Problems {
		if i == 3 {
			ps = append(ps, fmt.Sprintf("and %d more", len(rep.Problems)-3))
			break
		}
		ps = append(ps, p.String())
	}
	if len(ps) == 0 {
		ps = append(ps, listErr.Error())
	}
	return fail("store", fmt.Sprintf("maclan-ipam fsck --data-dir %s --network %s --repair", t.ipam.Store.Dir, t.network),
		"%s: fsck found %d problems: %s", dir, len(rep.Problems), strings.Join(ps, "; "))
}

// etcdStore asks maclan-ipam-etcd, beside this executable, for the leases
// and a check of an etcd store: maclan does not link the etcd client.
func etcdStore(t *target, tool string) ([]Result, []store.Lease) {
	e := t.ipam.Store
	args := []string{"--network", t.network, "--data-dir", e.Dir, "--etcd-endpoints", strings.Join(e.Endpoints, ","), "--etcd-prefix", e.Prefix}
	if e.Prefix == "" {
		args[len(args)-1] = store.DefaultEtcdPrefix
	}
	if e.TLS != nil {
		args = append(args, "--etcd-ca", e.TLS.CA, "--etcd-cert", e.TLS.Cert, "--etcd-key", e.TLS.Key)
	}
	run := func(cmd string, extra ...string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var out, errb bytes.Buffer
		c := exec.CommandContext(ctx, tool, append(append([]string{cmd}, args...), extra...)...)
		c.Stdout, c.Stderr = &out, &errb
		if err := c.Run(); err != nil {
			return out.Bytes(), fmt.Errorf("%s %s: %w: %s", filepath.Base(tool), cmd, err, strings.TrimSpace(errb.String()))
		}
		return out.Bytes(), nil
	}
	fix := "check that etcd is reachable from this host and the store's TLS files"
	if out, err := run("fsck"); err != nil {
		return []Result{fail("store", fix, "etcd store: %v %s", err, strings.TrimSpace(string(out)))}, nil
	}
	out, err := run("ls", "-o", "json")
	if err != nil {
		return []Result{fail("store", fix, "etcd store: %v", err)}, nil
	}
	var rows []struct {
		IP          string `json:"ip"`
		ContainerID string `json:"containerID"`
		IfName      string `json:"ifName"`
		Conflict    string `json:"conflict"`
	}
	if err := json.Unmarshal(out, &rows); err != nil {
		return []Result{fail("store", fix, "etcd store: read the lease list: %v", err)}, nil
	}
	var leases []store.Lease
	for _, r := range rows {
		if ip, err := netip.ParseAddr(r.IP); err == nil {
			leases = append(leases, store.Lease{IP: ip, ContainerID: r.ContainerID, IfName: r.IfName, Conflict: r.Conflict})
		}
	}
	return []Result{ok("store", "etcd store is readable and fsck-clean: %d leases", len(leases))}, leases
}

// maxCount bounds the walk that counts the usable addresses of one range;
// a larger range (IPv6, as a rule) cannot be filled by any host.
const maxCount = 1 << 20

// poolUsage reports, per range set, the leases held against the addresses
// the IPAM can hand out (the range less the network, broadcast and
// gateway addresses and ipam.exclude).
func poolUsage(c *ipamconf.Conf, leases []store.Lease) []Result {
	var rs []Result
	for i, set := range c.Ranges {
		size, bounded := usable(set, c.ExcludedPrefixes())
		used := 0
		for _, l := range leases {
			if set.RangeFor(l.IP) >= 0 {
				used++
			}
		}
		name := fmt.Sprintf("ranges[%d] %s", i, set[0])
		if len(set) > 1 {
			name += fmt.Sprintf(" (+%d)", len(set)-1)
		}
		rs = append(rs, poolResult(name, used, size, bounded))
	}
	return rs
}

func poolResult(name string, used, size int, bounded bool) Result {
	if !bounded {
		return ok("pool", "%s: %d leases in a range too large to fill", name, used)
	}
	share := 1.0
	if size > 0 {
		share = float64(used) / float64(size)
	}
	fix := "widen the range set (rangeStart/rangeEnd, or a second range in the set), or release the leases of containers that are gone (maclan-ipam ls, release)"
	switch {
	case used >= size:
		return fail("pool", fix, "%s: all %d usable addresses are leased: the next ADD gets none", name, size)
	case share >= poolWarn:
		return warn("pool", fix, "%s: %d of %d usable addresses leased (%.0f%%)", name, used, size, share*100)
	}
	return ok("pool", "%s: %d of %d usable addresses leased (%.0f%%)", name, used, size, share*100)
}

// usable counts the addresses of set that the IPAM can hand out; bounded
// is false when a range is larger than maxCount.
func usable(set iprange.RangeSet, exclude []netip.Prefix) (int, bool) {
	n := 0
	for _, r := range set {
		if tooLarge(r) {
			return 0, false
		}
		walked := 0
		for ip := r.RangeStart; ; ip = ip.Next() {
			if walked++; walked > maxCount {
				return 0, false
			}
			if ex, _ := iprange.Excluded(ip, exclude); !ex && !r.Reserved(ip) {
				n++
			}
			if ip == r.RangeEnd {
				break
			}
		}
	}
	return n, true
}

// tooLarge reports a range of more than maxCount addresses without walking it.
func tooLarge(r iprange.Range) bool {
	s, e := r.RangeStart.As16(), r.RangeEnd.As16()
	if [12]byte(s[:12]) != [12]byte(e[:12]) {
		return true
	}
	return binary.BigEndian.Uint32(e[12:])-binary.BigEndian.Uint32(s[12:]) >= maxCount
}

// leaseLifecycle counts the leases that outlived their container and that
// maclan-ipam gives back by itself (docs/ipam.md, "Lease lifecycle"):
// leases this host took in an earlier boot (the next call sweeps them,
// unless reclaimAfterReboot is off), and leases of this boot whose network
// namespace has gone (reclaimed when the range is full, or by "maclan-ipam
// gc --stale").
func leaseLifecycle(leases []store.Lease) []Result {
	id, err := holder.Current()
	if err != nil {
		return []Result{skip("lease-life", "cannot tell this host's boot: %v", err)}
	}
	var earlier, vanished, legacy int
	for _, l := range leases {
		if l.Conflict != "" || l.IsSticky() {
			continue
		}
		switch {
		case l.Host == "" && l.Boot == "":
			legacy++
		case l.Host != id.Host:
		case l.Boot != id.Boot:
			earlier++
		case l.Netns != "":
			if gone, err := holder.NetnsGone(l.Netns); err == nil && gone {
				vanished++
			}
		}
	}
	if earlier+vanished == 0 {
		return []Result{ok("lease-life", "no lease of an earlier boot or of a vanished namespace (%d leases; %d written before leases recorded their host)", len(leases), legacy)}
	}
	return []Result{warn("lease-life",
		"nothing to do if the next ADD may free them; to free them now: maclan-ipam gc --stale (vanished namespaces), any CNI call on the network (earlier boot)",
		"%d leases of an earlier boot of this host and %d of vanished namespaces hold addresses", earlier, vanished)}
}
