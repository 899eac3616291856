//go:build integration

package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/maclan-cni/maclan/integration/samples"
)

// TestBench is the benchmark suite behind `make bench` (bench/run.sh): it
// runs maclan + maclan-ipam and the reference macvlan + host-local on the
// same workloads, from the lab's host namespace, exactly as a runtime does
// (fork/exec with the CNI environment and the configuration on stdin),
// alternating A B A B. Every operation is checked (address returned,
// interface present, gateway reachable, nothing left after DEL), so a fast
// wrong answer cannot pass. The raw samples go to the JSON file named by
// MACLAN_BENCH_OUT; bench/report turns them into docs/benchmarks.md.
// Without MACLAN_BENCH_OUT the suite is skipped: it is not a test, and it
// never compares a time against a threshold.
func TestBench(t *testing.T) {
	out := os.Getenv("MACLAN_BENCH_OUT")
	if out == "" {
		t.Skip("benchmarks run with MACLAN_BENCH_OUT set (make bench)")
	}
	rep := &benchReport{Report: samples.Report{Started: time.Now().UTC().Format(time.RFC3339), Host: benchHost()}}
	t.Cleanup(func() {
		b, err := json.MarshalIndent(rep, "", " ")
		if err == nil {
			err = os.WriteFile(out, b, 0o644)
		}
		if err != nil {
			t.Errorf("write %s: %v", out, err)
		}
	})
	// The reference gets a subnet of its own on the same LAN, so both can
	// hold 200 addresses at once without answering for each other's.
	theLab.ip(t, "-n", theLab.gw.name, "addr", "add", refGw4+"/24", "dev", gwIf)
	t.Cleanup(func() { _ = run("ip", "-n", theLab.gw.name, "addr", "del", refGw4+"/24", "dev", gwIf) }) // the lab goes anyway

	t.Run("floor", func(t *testing.T) { benchFloor(t, rep, benchEnvInt("MACLAN_BENCH_FLOOR", 100)) })
	t.Run("sequential", func(t *testing.T) { benchSequential(t, rep, benchEnvInt("MACLAN_BENCH_SEQ", 200)) })
	t.Run("dualstack", func(t *testing.T) { benchDualStack(t, rep, benchEnvInt("MACLAN_BENCH_DUAL", 10)) })
	t.Run("parallel", func(t *testing.T) {
		benchParallel(t, rep, benchEnvInt("MACLAN_BENCH_PAR", 100), benchEnvInt("MACLAN_BENCH_PAR_ROUNDS", 3))
	})
	t.Run("trace", func(t *testing.T) { benchTrace(t, rep, benchEnvInt("MACLAN_BENCH_TRACE", 30)) })
	t.Run("ipam", func(t *testing.T) { benchIPAM(t, rep) })
	t.Run("cluster", func(t *testing.T) { requireEtcd(t); benchCluster(t, rep) })
}

const (
	refGw4 = "203.0.113.1"
	// Each flavour hands out .10-.250 of its own /24.
	benchFirst4 = 10
	benchLast4  = 250
)

// benchReport is what TestBench writes for bench/report; workloads are
// added from several goroutines.
type benchReport struct {
	samples.Report
	mu sync.Mutex
}

func (r *benchReport) workload(name string) *samples.Workload {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := &samples.Workload{Name: name, Ops: map[string]*samples.Series{}}
	r.Workloads = append(r.Workloads, w)
	return w
}

func benchHost() string {
	var u unix.Utsname
	_ = unix.Uname(&u) // only a label
	cpus := 0
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		cpus = bytes.Count(b, []byte("\nprocessor"))
		if bytes.HasPrefix(b, []byte("processor")) {
			cpus++
		}
	}
	return fmt.Sprintf("%d CPUs, Linux %s", cpus, unix.ByteSliceToString(u.Release[:]))
}

func benchEnvInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

// flavour is one plugin pair with a network of its own.
type flavour struct {
	name, plugin, ipam string
	net4, gw4          string // "198.51.100." style prefix and gateway
	v6First, v6Last    string
	network, dataDir   string
}

func benchFlavours(t *testing.T) []*flavour {
	mk := func(name, plugin, ipam, net4, gw, v6a, v6b string) *flavour {
		return &flavour{
			name: name, plugin: plugin, ipam: ipam, net4: net4, gw4: gw, v6First: v6a, v6Last: v6b,
			network: fmt.Sprintf("%s-%s%d", theLab.prefix, name, theLab.seq.Add(1)),
			dataDir: t.TempDir(),
		}
	}
	return []*flavour{
		mk("maclan", "maclan", "maclan-ipam", "198.51.100.", gw4, "2001:db8:100::1000", "2001:db8:100::1fff"),
		mk("reference", "macvlan", "host-local", "203.0.113.", refGw4, "2001:db8:100::2000", "2001:db8:100::2fff"),
	}
}

// conf is the network configuration; dual adds an IPv6 range set.
func (f *flavour) conf(t *testing.T, dual bool) []byte {
	ranges := []any{[]any{map[string]any{
		"subnet":     f.net4 + "0/24",
		"rangeStart": f.net4 + strconv.Itoa(benchFirst4),
		"rangeEnd":   f.net4 + strconv.Itoa(benchLast4),
		"gateway":    f.gw4,
	}}}
	routes := []any{map[string]any{"dst": "0.0.0.0/0"}}
	if dual {
		ranges = append(ranges, []any{map[string]any{"subnet": subnet6, "rangeStart": f.v6First, "rangeEnd": f.v6Last, "gateway": gw6}})
		routes = append(routes, map[string]any{"dst": "::/0"})
	}
	b, err := json.Marshal(map[string]any{
		"cniVersion": "1.0.0", "name": f.network, "type": f.plugin, "master": masterIf, "mode": "bridge",
		"ipam": map[string]any{"type": f.ipam, "dataDir": f.dataDir, "ranges": ranges, "routes": routes},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type benchSample struct{ wall, cpu time.Duration }

// benchCall is one plugin execution, prepared ahead so that starting it
// costs only the fork/exec.
type benchCall struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	start          time.Time
	sample         benchSample
}

func (f *flavour) call(command, containerID string, c *netNS, conf []byte, extraEnv ...string) *benchCall {
	bc := &benchCall{cmd: exec.Command(filepath.Join(benchDir(f.plugin), f.plugin))}
	if wrap := strings.Fields(os.Getenv("MACLAN_BENCH_WRAP")); len(wrap) > 0 {
		// An analysis aid (strace -f -o FILE, perf stat ...): the times
		// then include the wrapper.
		bc.cmd = exec.Command(wrap[0], append(wrap[1:], bc.cmd.Path)...)
	}
	bc.cmd.Env = append([]string{
		"CNI_COMMAND=" + command,
		"CNI_CONTAINERID=" + containerID,
		"CNI_NETNS=" + c.path,
		"CNI_IFNAME=eth0",
		"CNI_PATH=" + theLab.binDir + string(os.PathListSeparator) + theLab.toolsDir,
		"PATH=" + os.Getenv("PATH"),
	}, extraEnv...)
	bc.cmd.Stdin = bytes.NewReader(conf)
	bc.cmd.Stdout, bc.cmd.Stderr = &bc.stdout, &bc.stderr
	return bc
}

func benchDir(plugin string) string {
	if inDirs(plugin, theLab.binDir) {
		return theLab.binDir
	}
	return theLab.toolsDir
}

// startGuarded starts the call from the lab's host namespace, after the
// safety guard.
func (bc *benchCall) startGuarded() error {
	return theLab.inHost(func() error {
		bc.start = time.Now()
		return bc.cmd.Start()
	})
}

func (bc *benchCall) wait() error {
	err := bc.cmd.Wait()
	bc.sample.wall = time.Since(bc.start)
	if ps := bc.cmd.ProcessState; ps != nil {
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			bc.sample.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s %s", filepath.Base(bc.cmd.Path), envValue(bc.cmd.Env, "CNI_COMMAND"),
			err, bytes.TrimSpace(bc.stdout.Bytes()), bytes.TrimSpace(bc.stderr.Bytes()))
	}
	return nil
}

func (bc *benchCall) run() error {
	if err := bc.startGuarded(); err != nil {
		return err
	}
	return bc.wait()
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}

// benchContainer is a container namespace named for the bench; it is
// deleted when t ends.
func benchContainer(t *testing.T) *netNS {
	t.Helper()
	n, err := theLab.addNetNS(fmt.Sprintf("b%d", theLab.seq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeContainer(t, n) })
	return n
}

// checkAdded checks an ADD result against the kernel: one address per
// family asked for, inside the flavour's ranges, on an eth0 that is up in
// the container, with no IPv6 address still tentative. It returns the
// addresses.
func (f *flavour) checkAdded(t *testing.T, c *netNS, stdout []byte, dual bool) []netip.Addr {
	t.Helper()
	var res current.Result
	if err := json.Unmarshal(stdout, &res); err != nil {
		t.Fatalf("%s ADD result %q: %v", f.name, stdout, err)
	}
	want := 1
	if dual {
		want = 2
	}
	if len(res.IPs) != want {
		t.Fatalf("%s ADD in %s: got %d addresses (%v), want %d", f.name, c.name, len(res.IPs), res.IPs, want)
	}
	l, err := c.nl.LinkByName("eth0")
	if err != nil {
		t.Fatalf("%s ADD in %s: eth0: %v", f.name, c.name, err)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("%s ADD in %s: eth0 is down", f.name, c.name)
	}
	var ips []netip.Addr
	for _, ipc := range res.IPs {
		ip, _ := netip.AddrFromSlice(ipc.Address.IP)
		ip = ip.Unmap()
		ips = append(ips, ip)
		if ip.Is4() && !strings.HasPrefix(ip.String(), f.net4) {
			t.Errorf("%s ADD: address %s outside %s0/24", f.name, ip, f.net4)
		}
		fam := netlink.FAMILY_V4
		if ip.Is6() {
			fam = netlink.FAMILY_V6
		}
		addrs, err := c.nl.AddrList(l, fam)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, a := range addrs {
			if a.IP.Equal(ipc.Address.IP) {
				found = true
				if a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
					t.Errorf("%s ADD: %s is still tentative or failed DAD when ADD returns", f.name, ip)
				}
			}
		}
		if !found {
			t.Errorf("%s ADD in %s: eth0 lacks %s", f.name, c.name, ip)
		}
	}
	return ips
}

// checkReach pings the gateway(s) from the container.
func (f *flavour) checkReach(t *testing.T, c *netNS, dual bool) {
	t.Helper()
	gws := []string{f.gw4}
	if dual {
		gws = append(gws, gw6)
	}
	for _, gw := range gws {
		if err := pingOnce(c, gw); err != nil {
			// One retry: a first echo may be lost while a port learns.
			if err = pingOnce(c, gw); err != nil {
				t.Errorf("%s: %v", f.name, err)
			}
		}
	}
}

// leases lists what the flavour's IPAM still holds.
func (f *flavour) leases(t *testing.T) []string {
	t.Helper()
	dir := filepath.Join(f.dataDir, f.network)
	if f.ipam == "maclan-ipam" {
		dir = filepath.Join(dir, "leases")
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var ips []string
	for _, e := range entries {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			ips = append(ips, e.Name())
		}
	}
	return ips
}

// checkDeleted checks that DEL left nothing: no eth0 in the container.
func (f *flavour) checkDeleted(t *testing.T, c *netNS) {
	t.Helper()
	if _, err := c.nl.LinkByName("eth0"); err == nil {
		t.Errorf("%s DEL in %s: eth0 is still there", f.name, c.name)
	}
}

// alternate runs fn for every flavour, the order swapped every round.
func alternate(fl []*flavour, round int, fn func(f *flavour)) {
	order := slices.Clone(fl)
	if round%2 == 1 {
		slices.Reverse(order)
	}
	for _, f := range order {
		fn(f)
	}
}

func benchSequential(t *testing.T, rep *benchReport, n int) {
	fl := benchFlavours(t)
	add, del := rep.workload("sequential ADD (IPv4)"), rep.workload("sequential DEL (IPv4)")
	ctrs := map[*flavour][]*netNS{}
	confs := map[*flavour][]byte{}
	for _, f := range fl {
		confs[f] = f.conf(t, false)
		for range n {
			ctrs[f] = append(ctrs[f], benchContainer(t))
		}
	}
	seen := map[*flavour]map[netip.Addr]bool{}
	for i := range n {
		alternate(fl, i, func(f *flavour) {
			c := ctrs[f][i]
			bc := f.call("ADD", c.name, c, confs[f])
			if err := bc.run(); err != nil {
				t.Fatal(err)
			}
			samples.AddTo(add.Ops, f.name, bc.sample.wall, bc.sample.cpu)
			for _, ip := range f.checkAdded(t, c, bc.stdout.Bytes(), false) {
				if seen[f] == nil {
					seen[f] = map[netip.Addr]bool{}
				}
				if seen[f][ip] {
					t.Errorf("%s handed out %s twice", f.name, ip)
				}
				seen[f][ip] = true
			}
			f.checkReach(t, c, false)
		})
	}
	for _, f := range fl {
		if got := len(f.leases(t)); got != n {
			t.Errorf("%s holds %d leases after %d ADDs", f.name, got, n)
		}
	}
	for i := range n {
		alternate(fl, i, func(f *flavour) {
			c := ctrs[f][i]
			bc := f.call("DEL", c.name, c, confs[f])
			if err := bc.run(); err != nil {
				t.Fatal(err)
			}
			samples.AddTo(del.Ops, f.name, bc.sample.wall, bc.sample.cpu)
			f.checkDeleted(t, c)
		})
	}
	for _, f := range fl {
		if got := f.leases(t); len(got) != 0 {
			t.Errorf("%s still holds %v after DEL", f.name, got)
		}
	}
}

func benchDualStack(t *testing.T, rep *benchReport, n int) {
	fl := benchFlavours(t)
	add, del := rep.workload("dual-stack ADD"), rep.workload("dual-stack DEL")
	for i := range n {
		alternate(fl, i, func(f *flavour) {
			conf := f.conf(t, true)
			c := benchContainer(t)
			bc := f.call("ADD", c.name, c, conf)
			if err := bc.run(); err != nil {
				t.Fatal(err)
			}
			samples.AddTo(add.Ops, f.name, bc.sample.wall, bc.sample.cpu)
			f.checkAdded(t, c, bc.stdout.Bytes(), true)
			f.checkReach(t, c, true)
			bc = f.call("DEL", c.name, c, conf)
			if err := bc.run(); err != nil {
				t.Fatal(err)
			}
			samples.AddTo(del.Ops, f.name, bc.sample.wall, bc.sample.cpu)
			f.checkDeleted(t, c)
			if got := f.leases(t); len(got) != 0 {
				t.Errorf("%s still holds %v after DEL", f.name, got)
			}
		})
	}
	benchDuplicate(t, fl[0], add)
}

// benchDuplicate checks, and times, that maclan still fails an ADD whose
// IPv6 address another host on the LAN holds.
func benchDuplicate(t *testing.T, f *flavour, w *samples.Workload) {
	const dup = "2001:db8:100::1ff0"
	sq := benchContainer(t)
	// The squatter: a macvlan of its own on the switch side, holding dup.
	theLab.ip(t, "-n", theLab.gw.name, "link", "add", "sq0", "link", gwIf, "type", "macvlan", "mode", "bridge")
	theLab.ip(t, "-n", theLab.gw.name, "link", "set", "sq0", "netns", sq.name)
	theLab.ip(t, "-n", sq.name, "addr", "add", dup+"/64", "dev", "sq0", "nodad")
	theLab.ip(t, "-n", sq.name, "link", "set", "sq0", "up")
	c := benchContainer(t)
	caps := fmt.Sprintf(`{"ips":[%q,%q]}`, f.net4+"240/24", dup+"/64")
	var conf map[string]any
	if err := json.Unmarshal(f.conf(t, true), &conf); err != nil {
		t.Fatal(err)
	}
	conf["capabilities"] = map[string]any{"ips": true}
	var rc map[string]any
	_ = json.Unmarshal([]byte(caps), &rc) // a literal above
	conf["runtimeConfig"] = rc
	b, _ := json.Marshal(conf) // a map of plain values
	bc := f.call("ADD", c.name, c, b)
	err := bc.run()
	if err == nil {
		t.Fatalf("%s ADD with %s held on the LAN succeeded, want a DAD failure", f.name, dup)
	}
	if !strings.Contains(err.Error(), dup) {
		t.Errorf("%s ADD with a duplicate: error %v does not name %s", f.name, err, dup)
	}
	w.Notes = append(w.Notes, fmt.Sprintf("duplicate IPv6 %s held by another host: maclan ADD failed in %s, as it must", dup,
		bc.sample.wall.Round(time.Millisecond)))
	if err := f.call("DEL", c.name, c, b).run(); err != nil {
		t.Error(err)
	}
	f.checkDeleted(t, c)
	if got := f.leases(t); len(got) != 0 {
		t.Errorf("%s still holds %v after the failed ADD", f.name, got)
	}
}

func benchParallel(t *testing.T, rep *benchReport, n, rounds int) {
	for r := range rounds {
		fl := benchFlavours(t)
		alternate(fl, r, func(f *flavour) {
			conf := f.conf(t, false)
			ctrs := make([]*netNS, n)
			for i := range ctrs {
				ctrs[i] = benchContainer(t)
			}
			for _, op := range []string{"ADD", "DEL"} {
				calls := make([]*benchCall, n)
				for i, c := range ctrs {
					calls[i] = f.call(op, c.name, c, conf)
				}
				round := &samples.ParallelRound{Flavour: f.name, Op: op, N: n}
				errs := make([]error, n)
				var wg sync.WaitGroup
				gate := make(chan struct{})
				for i, bc := range calls {
					wg.Go(func() {
						<-gate
						if errs[i] = bc.startGuarded(); errs[i] == nil {
							errs[i] = bc.wait()
						}
					})
				}
				start := time.Now()
				close(gate)
				wg.Wait()
				round.WallUS = time.Since(start).Microseconds()
				seen := map[netip.Addr]bool{}
				for i, bc := range calls {
					round.CPUUS += bc.sample.cpu.Microseconds()
					if errs[i] != nil {
						round.Failures++
						t.Logf("%s parallel %s: %v", f.name, op, errs[i])
						continue
					}
					if op == "ADD" {
						for _, ip := range f.checkAdded(t, ctrs[i], bc.stdout.Bytes(), false) {
							if seen[ip] {
								round.Dups++
								t.Errorf("%s parallel ADD handed out %s twice", f.name, ip)
							}
							seen[ip] = true
						}
					} else {
						f.checkDeleted(t, ctrs[i])
					}
				}
				if op == "ADD" && round.Failures == 0 {
					// Reachability of a sample: the first, the middle, the last.
					for _, i := range []int{0, n / 2, n - 1} {
						f.checkReach(t, ctrs[i], false)
					}
				}
				if op == "DEL" {
					if got := f.leases(t); len(got) != 0 {
						t.Errorf("%s still holds %v after the parallel DELs", f.name, got)
					}
				}
				if round.Failures > 0 {
					// A measured outcome (the report counts them), not a
					// broken bench: keep going so the run is written.
					t.Logf("%s parallel %s: %d of %d failed", f.name, op, round.Failures, n)
				}
				rep.mu.Lock()
				rep.Parallel = append(rep.Parallel, round)
				rep.mu.Unlock()
			}
			for _, c := range ctrs {
				removeContainer(t, c)
			}
		})
	}
}

// benchTrace runs maclan with MACLAN_TRACE=1, which prints one line per
// step to stderr ("maclan-trace <step> <µs>"; the "exec" step is the
// process start-up, computed here from the wall clock the plugin prints at
// the top of main).
func benchTrace(t *testing.T, rep *benchReport, n int) {
	f := benchFlavours(t)[0]
	rep.Trace = map[string][]int64{}
	record := func(bc *benchCall, prefix string) {
		for line := range strings.SplitSeq(bc.stderr.String(), "\n") {
			rest, ok := strings.CutPrefix(line, "maclan-trace ")
			i := strings.LastIndexByte(rest, ' ')
			if !ok || i < 0 {
				continue
			}
			step := rest[:i]
			v, err := strconv.ParseInt(rest[i+1:], 10, 64)
			if err != nil {
				continue
			}
			if step == "main" { // wall clock at main, in µs since the epoch
				v -= bc.start.UnixMicro()
				step = "start-up"
			}
			rep.Trace[prefix+step] = append(rep.Trace[prefix+step], v)
		}
	}
	for _, dual := range []bool{false, true} {
		conf := f.conf(t, dual)
		prefix := "ipv4 "
		if dual {
			prefix = "dual "
		}
		for range n {
			c := benchContainer(t)
			bc := f.call("ADD", c.name, c, conf, "MACLAN_TRACE=1")
			if err := bc.run(); err != nil {
				t.Fatal(err)
			}
			record(bc, prefix+"ADD ")
			rep.Trace[prefix+"ADD total"] = append(rep.Trace[prefix+"ADD total"], bc.sample.wall.Microseconds())
			f.checkAdded(t, c, bc.stdout.Bytes(), dual)
			bc = f.call("DEL", c.name, c, conf, "MACLAN_TRACE=1")
			if err := bc.run(); err != nil {
				t.Fatal(err)
			}
			record(bc, prefix+"DEL ")
			rep.Trace[prefix+"DEL total"] = append(rep.Trace[prefix+"DEL total"], bc.sample.wall.Microseconds())
			f.checkDeleted(t, c)
			removeContainer(t, c)
		}
	}
}

// benchIPAM runs bench/ipamscale (built by bench/run.sh and named by
// MACLAN_BENCH_IPAMSCALE) from the lab's host namespace: the IPAM binaries
// alone at 0 to 50,000 existing leases.
func benchIPAM(t *testing.T, rep *benchReport) {
	prog := os.Getenv("MACLAN_BENCH_IPAMSCALE")
	if prog == "" {
		t.Skip("MACLAN_BENCH_IPAMSCALE names the bench/ipamscale binary")
	}
	out := filepath.Join(t.TempDir(), "ipam.json")
	args := []string{"-ours", filepath.Join(theLab.binDir, "maclan-ipam"), "-ref", filepath.Join(theLab.toolsDir, "host-local"), "-json", out}
	if s := os.Getenv("MACLAN_BENCH_IPAM_SIZES"); s != "" {
		args = append(args, "-sizes", s)
	}
	if r := os.Getenv("MACLAN_BENCH_IPAM_ROUNDS"); r != "" {
		args = append(args, "-rounds", r)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(prog, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := theLab.inHost(cmd.Run); err != nil {
		t.Fatalf("ipamscale: %v: %s", err, stderr.String())
	}
	t.Logf("ipamscale:\n%s", stdout.String())
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	rep.IPAM = &samples.IPAM{}
	if err := json.Unmarshal(b, rep.IPAM); err != nil {
		t.Fatalf("ipamscale -json: %v", err)
	}
}
