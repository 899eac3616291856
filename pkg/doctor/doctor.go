// Package doctor is "maclan doctor": it checks what a macvlan network needs
// from the host and the LAN, and says what to fix. It changes nothing on
// the system except its own probe (a macvlan in a namespace of its own,
// which goes with the process whatever way it ends).
package doctor

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/maclan-cni/maclan/pkg/masterlink"
)

const usage = `usage: maclan doctor [--conf-dir D] [NETWORK...] [--master IF [--gateway IP[,IP]]] [-o text|json]

Checks each maclan network of the CNI configuration directory (or those
named, or the master and gateways given) and prints one line per check:
OK, WARN, FAIL or SKIP, what it saw, and the fix. Exit status 0 only when
no check failed. It changes nothing but its own probe, which it removes.
`

// DefaultConfDir is where CNI runtimes look for network configurations.
const DefaultConfDir = "/etc/cni/net.d"

// Options are the command line of one run.
type Options struct {
	ConfDir  string
	Networks []string
	Master   string
	Gateways []netip.Addr
	JSON     bool
	// ProcSys is /proc/sys/net, read in the host namespace (the tests
	// point it elsewhere).
	ProcSys string
	// EtcdTool is maclan-ipam-etcd, run for networks with an etcd store.
	EtcdTool string
	// Probe holds the probe half-way (integration tests only).
	Probe probeHooks
}

// errUsage marks a bad command line (exit status 2).
var errUsage = errors.New("usage")

// parseArgs reads flags and network names in any order.
func parseArgs(args []string) (Options, error) {
	o := Options{ProcSys: "/proc/sys/net"}
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.ConfDir, "conf-dir", DefaultConfDir, "CNI configuration directory")
	fs.StringVar(&o.Master, "master", "", "master interface to check without a configuration")
	gateways := fs.String("gateway", "", "gateway address(es) to ask, comma-separated")
	output := fs.String("o", "text", "output: text or json")
	for {
		if err := fs.Parse(args); err != nil {
			return o, fmt.Errorf("%w: %w", errUsage, err)
		}
		if fs.NArg() == 0 {
			break
		}
		o.Networks = append(o.Networks, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch *output {
	case "text":
	case "json":
		o.JSON = true
	default:
		return o, fmt.Errorf("%w: -o %q: want text or json", errUsage, *output)
	}
	var err error
	if o.Gateways, err = parseGateways(*gateways); err != nil {
		return o, fmt.Errorf("%w: %w", errUsage, err)
	}
	if len(o.Gateways) > 0 && o.Master == "" {
		return o, fmt.Errorf("%w: --gateway goes with --master", errUsage)
	}
	return o, nil
}

// Main runs "maclan doctor ARGS" and returns the exit status: 0 only when
// no check failed, 1 when one did, 2 for a bad command line.
func Main(args []string, stdout, stderr io.Writer) int {
	opts, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "maclan doctor: %v\n\n%s", err, usage)
		return 2
	}
	if exe, err := os.Executable(); err == nil {
		opts.EtcdTool = filepath.Join(filepath.Dir(exe), "maclan-ipam-etcd")
	}
	// A test hook, never set by hand: hold the probe until stdin closes.
	if os.Getenv("MACLAN_DOCTOR_HOLD_PROBE") == "1" {
		opts.Probe = probeHooks{Hold: os.Stdin, Held: stderr}
	}
	start := time.Now()
	results, err := Run(opts)
	if err != nil {
		fmt.Fprintf(stderr, "maclan doctor: %v\n", err)
		if errors.Is(err, errNoNetwork) {
			return 2
		}
		return 1
	}
	rep := newReport(results, time.Since(start))
	if opts.JSON {
		err = rep.writeJSON(stdout)
	} else {
		err = rep.writeText(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "maclan doctor: %v\n", err)
		return 1
	}
	if rep.Failed > 0 {
		return 1
	}
	return 0
}

// Run diagnoses the networks opts selects and returns every check's result.
func Run(opts Options) ([]Result, error) {
	var targets []*target
	if opts.Master == "" || len(opts.Networks) > 0 {
		var err error
		if targets, err = loadTargets(opts.ConfDir, opts.Networks); err != nil {
			return nil, err
		}
	}
	if opts.Master != "" {
		targets = append(targets, &target{master: opts.Master, gateways: opts.Gateways})
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("%w in %s: name one with --conf-dir, or check a master with --master IF --gateway IP", errNoNetwork, opts.ConfDir)
	}
	h, err := netlinksafe.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	var results []Result
	for _, t := range targets {
		rs := diagnose(h, t, opts)
		for i := range rs {
			rs[i].Network = t.network
			if t.network == "" {
				rs[i].Network = "master " + t.master
			}
		}
		results = append(results, rs...)
	}
	return results, nil
}

// diagnose runs every check of one target, in the order a person would:
// the configuration, the master, the LAN, the host, the store, the
// timings.
func diagnose(h netlinksafe.Handle, t *target, opts Options) []Result {
	var rs []Result
	if t.file != "" {
		if t.confErr != nil {
			rs = append(rs, fail("config", "correct the file: maclan ADD refuses it with the same words", "%s: %v", t.file, t.confErr))
		} else {
			rs = append(rs, ok("config", "%s", t.file))
		}
	}
	if t.conf != nil && t.conf.LinkInContainer {
		return append(rs, skip("master", "linkInContainer: the master lives in each container's namespace, out of the doctor's reach"))
	}
	mrs, master := checkMaster(h, t)
	rs = append(rs, mrs...)
	if master != nil {
		switch err := masterlink.Ready(master); {
		case err != nil:
			rs = append(rs, skip("gateway", "%v: fix the master first", err))
		case len(t.gateways) == 0:
			rs = append(rs, skip("gateway", "no gateway known: give --gateway, or a gateway in the IPAM ranges"))
		default:
			rs = append(rs, checkGateways(master, t.gateways, opts.Probe)...)
		}
	}
	if t.conf == nil || t.confErr != nil {
		return rs
	}
	srs, leases := checkStore(t, opts.EtcdTool)
	if master != nil {
		name := master.Attrs().Name
		rs = append(rs, checkHostReach(h, t, master, leases))
		if t.ipam != nil {
			rs = append(rs, checkOverlap(hostAddrs(h), t, shimName(name)))
		}
		rs = append(rs, checkSysctls(h, opts.ProcSys, t, name, leases)...)
	}
	rs = append(rs, srs...)
	return append(rs, checkTimings(t.conf.LogFile)...)
}
