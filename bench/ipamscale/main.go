// Command ipamscale times ADD and DEL of the maclan-ipam binary and of the
// reference host-local binary, alone (no main plugin, no namespaces), with
// 0, 1,000, 10,000 and 50,000 leases already in their stores. Runs
// alternate between the two (A/B, then B/A) and medians are reported.
//
// Before every ADD both cursors are put back in front of the existing
// leases, so each ADD starts its walk at the first address and has to get
// past every used one: the worst case, the one the issue quotes for
// host-local (735 ms with its cursor before 60,000 used addresses).
//
// Every ADD is checked (one address, not one of the existing leases, its
// lease written) and every DEL too (the lease gone), so a fast wrong answer
// cannot pass. With -json the samples (wall and CPU time of each exec) are
// written for bench/report.
//
// bench/ is a module of its own; bench/ipam-scale.sh builds this program
// there and runs it from the repository root, where its default paths point:
//
//	REF=/opt/cni/bin/host-local bench/ipam-scale.sh -rounds 21
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/maclan-cni/maclan/integration/samples"
	"github.com/maclan-cni/maclan/pkg/ipam/holder"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/disk"
)

const (
	network = "bench"
	subnet  = "10.128.0.0/14" // 262,142 host addresses
	first   = "10.128.0.2"    // .1 is the gateway
)

func main() {
	ours := flag.String("ours", "bin/maclan-ipam", "maclan-ipam binary")
	ref := flag.String("ref", "/opt/cni/bin/host-local", "reference host-local binary")
	sizesFlag := flag.String("sizes", "0,1000,10000,50000", "existing lease counts")
	rounds := flag.Int("rounds", 11, "ADD+DEL pairs per binary and size")
	work := flag.String("dir", "", "work directory (default: a temporary one)")
	jsonOut := flag.String("json", "", "write the samples to this file")
	sweep := flag.Int("sweep", 50000, "time the sweep after a reboot over this many leases (0: skip)")
	flag.Parse()
	if err := run(*ours, *ref, *sizesFlag, *rounds, *work, *jsonOut, *sweep); err != nil {
		fmt.Fprintln(os.Stderr, "ipamscale:", err)
		os.Exit(1)
	}
}

func run(ours, ref, sizesFlag string, rounds int, work, jsonOut string, sweep int) error {
	var sizes []int
	for s := range strings.SplitSeq(sizesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-sizes: %w", err)
		}
		sizes = append(sizes, n)
	}
	if work == "" {
		d, err := os.MkdirTemp("", "ipamscale")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d) //nolint:errcheck // temporary
		work = d
	}
	res := &samples.IPAM{Rounds: rounds}
	fmt.Printf("%-8s %14s %14s %14s %14s %9s %9s\n", "leases", "ours ADD", "ref ADD", "ours DEL", "ref DEL", "ADD x", "DEL x")
	for _, n := range sizes {
		sz := &samples.Size{Leases: n, Ops: map[string]*samples.Series{}}
		res.Sizes = append(res.Sizes, sz)
		oursDir := filepath.Join(work, fmt.Sprintf("ours-%d", n))
		refDir := filepath.Join(work, fmt.Sprintf("ref-%d", n))
		if err := fillOurs(oursDir, n); err != nil {
			return err
		}
		if err := fillRef(refDir, n); err != nil {
			return err
		}
		var oa, od, ra, rd []time.Duration
		for r := range rounds {
			id := fmt.Sprintf("bench-%d", r)
			a := func() error {
				// Cursor back before the leases: the walk must pass them all.
				if err := resetOursCursor(oursDir); err != nil {
					return err
				}
				t1, t2, err := addDel(ours, oursDir, id, n, oursLeases(oursDir))
				oa, od = append(oa, t1.wall), append(od, t2.wall)
				samples.AddTo(sz.Ops, "maclan ADD", t1.wall, t1.cpu)
				samples.AddTo(sz.Ops, "maclan DEL", t2.wall, t2.cpu)
				return err
			}
			b := func() error {
				if err := os.WriteFile(filepath.Join(refDir, network, "last_reserved_ip.0"), []byte("10.128.0.1"), 0o600); err != nil {
					return err
				}
				t1, t2, err := addDel(ref, refDir, id, n, refLeases(refDir))
				ra, rd = append(ra, t1.wall), append(rd, t2.wall)
				samples.AddTo(sz.Ops, "reference ADD", t1.wall, t1.cpu)
				samples.AddTo(sz.Ops, "reference DEL", t2.wall, t2.cpu)
				return err
			}
			if r%2 == 1 {
				a, b = b, a
			}
			if err := a(); err != nil {
				return err
			}
			if err := b(); err != nil {
				return err
			}
		}
		mo, mr, do, dr := median(oa), median(ra), median(od), median(rd)
		fmt.Printf("%-8d %14s %14s %14s %14s %8.0fx %8.0fx\n", n, mo, mr, do, dr, float64(mr)/float64(mo), float64(dr)/float64(do))
		// The stores can be large: free the disk before the next size.
		if err := errors.Join(os.RemoveAll(oursDir), os.RemoveAll(refDir)); err != nil {
			return err
		}
	}
	if sweep > 0 {
		sw, err := timeSweep(ours, filepath.Join(work, "sweep"), sweep)
		if err != nil {
			return err
		}
		res.Sweep = sw
		fmt.Printf("after-boot sweep of %d leases: first ADD %s, next ADD %s\n", sw.Leases,
			time.Duration(sw.FirstUS)*time.Microsecond, time.Duration(sw.NextUS)*time.Microsecond)
	}
	if jsonOut == "" {
		return nil
	}
	b, err := json.MarshalIndent(res, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(jsonOut, b, 0o644)
}

func conf(dataDir string) string {
	return fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"type":"maclan","master":"eth0","ipam":{"type":"x","dataDir":%q,"ranges":[[{"subnet":%q}]]}}`, network, dataDir, subnet)
}

type sample struct{ wall, cpu time.Duration }

// addDel times an ADD then a DEL of attachment id, and checks them: the
// ADD hands out one address past the n existing leases (which fill the
// range from its first address) and writes its lease; the DEL removes it.
func addDel(bin, dataDir, id string, n int, leaseFile func(netip.Addr) string) (add, del sample, err error) {
	var ts [2]sample
	var got netip.Addr
	for i, cmd := range []string{"ADD", "DEL"} {
		c := exec.Command(bin)
		c.Env = []string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + id, "CNI_NETNS=/nonexistent", "CNI_IFNAME=eth0", "CNI_PATH=/nonexistent"}
		c.Stdin = strings.NewReader(conf(dataDir))
		var out, stderr bytes.Buffer
		c.Stdout, c.Stderr = &out, &stderr
		start := time.Now()
		err := c.Run()
		ts[i].wall = time.Since(start)
		if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
			ts[i].cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
		if err != nil {
			return ts[0], ts[1], fmt.Errorf("%s %s %s: %w: %s%s", filepath.Base(bin), cmd, id, err, out.String(), stderr.String())
		}
		if cmd == "ADD" {
			var res struct {
				IPs []struct{ Address string } `json:"ips"`
			}
			if err := json.Unmarshal(out.Bytes(), &res); err != nil || len(res.IPs) != 1 {
				return ts[0], ts[1], fmt.Errorf("%s ADD %s: result %q: want one address (%v)", filepath.Base(bin), id, out.String(), err)
			}
			p, err := netip.ParsePrefix(res.IPs[0].Address)
			if err != nil {
				return ts[0], ts[1], fmt.Errorf("%s ADD %s: %w", filepath.Base(bin), id, err)
			}
			got = p.Addr()
			if lowest := netip.MustParseAddr(first); n > 0 && got.Compare(addrs(n)[n-1]) <= 0 || got.Compare(lowest) < 0 {
				return ts[0], ts[1], fmt.Errorf("%s ADD %s: handed out %s, which an existing lease holds", filepath.Base(bin), id, got)
			}
		}
		_, statErr := os.Stat(leaseFile(got))
		if cmd == "ADD" && statErr != nil {
			return ts[0], ts[1], fmt.Errorf("%s ADD %s: no lease for %s: %w", filepath.Base(bin), id, got, statErr)
		}
		if cmd == "DEL" && !errors.Is(statErr, os.ErrNotExist) {
			return ts[0], ts[1], fmt.Errorf("%s DEL %s: the lease of %s is still there (%v)", filepath.Base(bin), id, got, statErr)
		}
	}
	return ts[0], ts[1], nil
}

func oursLeases(dataDir string) func(netip.Addr) string {
	return func(ip netip.Addr) string { return filepath.Join(dataDir, network, "leases", ip.String()) }
}

func refLeases(dataDir string) func(netip.Addr) string {
	return func(ip netip.Addr) string { return filepath.Join(dataDir, network, ip.String()) }
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2].Round(10 * time.Microsecond)
}

func addrs(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	ip := netip.MustParseAddr(first)
	for i := range out {
		out[i] = ip
		ip = ip.Next()
	}
	return out
}

// timeSweep fills a store with n leases that this host took in another
// boot, then times the ADD that sweeps them all (the first call after a
// reboot) and the ADD after it, and checks that the sweep left only the
// two new leases.
func timeSweep(bin, dataDir string, n int) (*samples.Sweep, error) {
	id, err := holder.Current()
	if err != nil {
		return nil, err
	}
	// Made in an earlier boot, before this one began: the sweep keeps any
	// lease created since (holder.BootTime).
	bootTime := holder.BootTime()
	made := bootTime.Add(-time.Hour)
	if bootTime.IsZero() {
		made = time.Now().Add(-time.Hour)
	}
	if err := fillOursAs(dataDir, n, store.Lease{Host: id.Host, Boot: "an-earlier-boot", Created: made}); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dataDir) //nolint:errcheck // bench data
	// That boot wrote its leases without fsync, as the plugin does by
	// default: the first call of this one repairs the store before the
	// sweep (disk/boot.go), and is timed with it.
	if err := markVolatileBoot(dataDir, disk.Boot{Host: id.Host, ID: "an-earlier-boot"}); err != nil {
		return nil, err
	}
	sw := &samples.Sweep{Leases: n}
	for i, us := range []*int64{&sw.FirstUS, &sw.NextUS} {
		t, _, err := addDel(bin, dataDir, fmt.Sprintf("sweep-%d", i), 0, oursLeases(dataDir))
		if err != nil {
			return nil, err
		}
		*us = t.wall.Microseconds()
	}
	entries, err := os.ReadDir(filepath.Join(dataDir, network, "leases"))
	if err != nil {
		return nil, err
	}
	if len(entries) != 0 {
		return nil, fmt.Errorf("after the sweep and two ADD+DELs, %d leases are left, want none", len(entries))
	}
	return sw, nil
}

// markVolatileBoot records in the store that boot wrote to it without
// fsync, as the plugin's first call of that boot would have.
func markVolatileBoot(dataDir string, boot disk.Boot) error {
	st, err := disk.New(dataDir, network, disk.Options{Boot: boot, Volatile: true})
	if err != nil {
		return err
	}
	defer st.Close() //nolint:errcheck // bench setup
	return store.WithLock(context.Background(), st, func() error { return nil })
}

// fillOurs writes n leases through the store's bulk Import.
func fillOurs(dataDir string, n int) error {
	if err := fillOursAs(dataDir, n, store.Lease{}); err != nil {
		return err
	}
	return resetOursCursor(dataDir)
}

// resetOursCursor puts maclan-ipam's cursor on the gateway, before the
// first lease, as the store itself rewrites it: in place, in the file that
// every ADD after a network's first finds there. That is what the
// reference's reset does to its cursor file too (fillRef, and before each
// of its ADDs). Removing the file instead, as this program did until
// 2026-12, made every ADD of ours create a cursor file, one more new inode
// per ADD than any ADD in use pays.
func resetOursCursor(dataDir string) error {
	st, err := disk.New(dataDir, network, disk.Options{})
	if err != nil {
		return err
	}
	defer st.Close() //nolint:errcheck // bench setup
	ctx := context.Background()
	return store.WithLock(ctx, st, func() error {
		return st.SetCursor(ctx, "0", netip.MustParseAddr("10.128.0.1"))
	})
}

// fillOursAs is fillOurs with the lifecycle fields of stamp on every lease.
func fillOursAs(dataDir string, n int, stamp store.Lease) error {
	st, err := disk.New(dataDir, network, disk.Options{})
	if err != nil {
		return err
	}
	defer st.Close() //nolint:errcheck // bench setup
	leases := make([]store.Lease, 0, n)
	for i, ip := range addrs(n) {
		l := stamp
		l.IP, l.ContainerID, l.IfName = ip, fmt.Sprintf("pre-%d", i), "eth0"
		if l.Created.IsZero() {
			l.Created = time.Now()
		}
		leases = append(leases, l)
	}
	return store.WithLock(context.Background(), st, func() error {
		_, err := st.Import(context.Background(), leases)
		return err
	})
}

// fillRef writes host-local's own files: one per address, named by the
// address and holding "<container ID>\r\n<ifname>", plus its cursor.
func fillRef(dataDir string, n int) error {
	dir := filepath.Join(dataDir, network)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i, ip := range addrs(n) {
		if err := os.WriteFile(filepath.Join(dir, ip.String()), fmt.Appendf(nil, "pre-%d\r\neth0", i), 0o600); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "last_reserved_ip.0"), []byte("10.128.0.1"), 0o600)
}
