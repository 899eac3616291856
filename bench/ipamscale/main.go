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
//	go run ./bench/ipamscale -ours bin/maclan-ipam -ref /opt/cni/bin/host-local
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

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
	flag.Parse()
	if err := run(*ours, *ref, *sizesFlag, *rounds, *work); err != nil {
		fmt.Fprintln(os.Stderr, "ipamscale:", err)
		os.Exit(1)
	}
}

func run(ours, ref, sizesFlag string, rounds int, work string) error {
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
	fmt.Printf("%-8s %14s %14s %14s %14s %9s %9s\n", "leases", "ours ADD", "ref ADD", "ours DEL", "ref DEL", "ADD x", "DEL x")
	for _, n := range sizes {
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
				if err := os.RemoveAll(filepath.Join(oursDir, network, "cursor", "0")); err != nil {
					return err
				}
				t1, t2, err := addDel(ours, oursDir, id)
				oa, od = append(oa, t1), append(od, t2)
				return err
			}
			b := func() error {
				if err := os.WriteFile(filepath.Join(refDir, network, "last_reserved_ip.0"), []byte("10.128.0.1"), 0o600); err != nil {
					return err
				}
				t1, t2, err := addDel(ref, refDir, id)
				ra, rd = append(ra, t1), append(rd, t2)
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
	}
	return nil
}

func conf(dataDir string) string {
	return fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"type":"maclan","master":"eth0","ipam":{"type":"x","dataDir":%q,"ranges":[[{"subnet":%q}]]}}`, network, dataDir, subnet)
}

func addDel(bin, dataDir, id string) (time.Duration, time.Duration, error) {
	var ts [2]time.Duration
	for i, cmd := range []string{"ADD", "DEL"} {
		c := exec.Command(bin)
		c.Env = []string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + id, "CNI_NETNS=/nonexistent", "CNI_IFNAME=eth0", "CNI_PATH=/nonexistent"}
		c.Stdin = strings.NewReader(conf(dataDir))
		var out bytes.Buffer
		c.Stdout, c.Stderr = &out, &out
		start := time.Now()
		err := c.Run()
		ts[i] = time.Since(start)
		if err != nil {
			return 0, 0, fmt.Errorf("%s %s %s: %w: %s", filepath.Base(bin), cmd, id, err, out.String())
		}
	}
	return ts[0], ts[1], nil
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

// fillOurs writes n leases through the store's bulk Import.
func fillOurs(dataDir string, n int) error {
	st, err := disk.New(dataDir, network, disk.Options{})
	if err != nil {
		return err
	}
	defer st.Close() //nolint:errcheck // bench setup
	leases := make([]store.Lease, 0, n)
	for i, ip := range addrs(n) {
		leases = append(leases, store.Lease{IP: ip, ContainerID: fmt.Sprintf("pre-%d", i), IfName: "eth0", Created: time.Now()})
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
