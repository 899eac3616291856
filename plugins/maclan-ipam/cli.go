package ipamplugin

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/containernetworking/cni/pkg/version"

	"github.com/maclan-cni/maclan/pkg/ipam/holder"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/disk"
)

const usage = `usage: maclan-ipam COMMAND [flags]   (run by a CNI runtime when CNI_COMMAND is set)

  ls      [--data-dir D] [--network N] [-o table|json]   list leases
  release --network N (--ip IP | --container ID [--ifname IF]) [--data-dir D]
  fsck    [--data-dir D] [--network N] [--repair]        check (and repair) the store
  gc      --stale [--data-dir D] [--network N] [--stale-after 5m]
          release the leases of this host and boot whose network namespace
          has gone (never one whose namespace exists or was not recorded)
  migrate --from-host-local DIR --network N [--data-dir D] [--ifname IF]
          adopt the leases of the reference host-local plugin (DIR is
          /var/lib/cni/networks/N or its parent)
  migrate --from disk --to etcd --network N [--data-dir D] --etcd-endpoints E
          copy a host's directory store of network N into the etcd store
  version

  ls, release, fsck and gc act on the etcd store instead of the directory store
  when given --etcd-endpoints E[,E...] [--etcd-prefix P]
  [--etcd-ca F --etcd-cert F --etcd-key F].
`

// cli runs one operator command. Exit codes: 0 ok, 1 failure or problems
// found, 2 bad usage.
type cli struct {
	stdout, stderr io.Writer
	log            *slog.Logger
}

func runCLI(args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, log: slog.New(slog.NewTextHandler(stderr, nil))}
	if len(args) == 0 {
		_, _ = fmt.Fprintf(stderr, "%s\nCNI protocol versions supported: %s\n\n%s", about(), strings.Join(version.All.SupportedVersions(), ", "), usage) // nothing to do if stderr fails
		return 0
	}
	cmds := map[string]func([]string) error{
		"ls": c.ls, "release": c.release, "fsck": c.fsck, "migrate": c.migrate, "gc": c.gc,
		"version": func([]string) error { _, err := fmt.Fprintln(stdout, about()); return err },
	}
	run, ok := cmds[args[0]]
	if !ok {
		_, _ = fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage) // nothing to do if stderr fails
		return 2
	}
	err := run(args[1:])
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue), errors.Is(err, flag.ErrHelp):
		_, _ = fmt.Fprintf(stderr, "%v\n\n%s", err, usage) // nothing to do if stderr fails
		return 2
	default:
		_, _ = fmt.Fprintf(stderr, "maclan-ipam %s: %v\n", args[0], err) // nothing to do if stderr fails
		return 1
	}
}

type usageError string

func (e usageError) Error() string { return string(e) }

func (c *cli) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	return nil
}

// open opens the store of one network; it refuses to create one, since an
// operator command on a misspelled name must not make an empty store.
func (c *cli) open(dataDir, network string) (*disk.Store, error) {
	if err := store.ValidateName("network name", network); err != nil {
		return nil, usageError(err.Error())
	}
	if _, err := os.Stat(filepath.Join(dataDir, network, "leases")); err != nil {
		return nil, fmt.Errorf("no store for network %q under %s: %w", network, dataDir, err)
	}
	return disk.New(dataDir, network, disk.Options{Log: c.log.With("network", network)})
}

// networks lists the networks with a store under dataDir, or just the one
// named.
func networks(dataDir, network string) ([]string, error) {
	if network != "" {
		return []string{network}, nil
	}
	entries, err := os.ReadDir(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if fi, err := os.Stat(filepath.Join(dataDir, e.Name(), "leases")); err == nil && fi.IsDir() && store.ValidateName("", e.Name()) == nil {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// cell is a string read from a store as a table shows it: as it is if it
// is all printable (letters, marks, numbers, punctuation, symbols, ASCII
// space), else as a Go quoted string, so that a store writer cannot send
// the operator's terminal a control sequence, a line or a column of its
// own. A value holding '"' or '\\' is quoted too, so that a quoted cell
// cannot be forged. (-o json escapes by itself.)
func cell(s string) string {
	odd := func(r rune) bool { return r == '"' || r == '\\' || !unicode.IsPrint(r) }
	if !utf8.ValidString(s) || strings.ContainsFunc(s, odd) {
		return strconv.Quote(s)
	}
	return s
}

// printable escapes what a terminal would act on in a line made from the
// store's records (fsck's problems name keys and record contents that any
// store writer controls): every non-printing rune, and invalid UTF-8, as
// Go escapes; the rest of the line reads as it is.
func printable(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], string(utf8.RuneError)):
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}

type lsRow struct {
	Network     string    `json:"network"`
	IP          string    `json:"ip"`
	ContainerID string    `json:"containerID"`
	IfName      string    `json:"ifName"`
	Created     time.Time `json:"created"`
	// Conflict is the MAC of a LAN device found using the address.
	Conflict string `json:"conflict,omitempty"`
	// The lifecycle fields (docs/ipam.md, "Lease lifecycle").
	Host        string    `json:"host,omitempty"`
	Boot        string    `json:"boot,omitempty"`
	ThisBoot    bool      `json:"thisBoot"`
	Netns       string    `json:"netns,omitempty"`
	Workload    string    `json:"workload,omitempty"`
	WorkloadUID string    `json:"workloadUID,omitempty"`
	Released    time.Time `json:"released,omitzero"`
}

func newLsRow(network string, l store.Lease, me holder.Identity) lsRow {
	return lsRow{
		Network: network, IP: l.IP.String(), ContainerID: l.ContainerID, IfName: l.IfName, Created: l.Created,
		Conflict: l.Conflict, Host: l.Host, Boot: l.Boot, ThisBoot: l.Boot != "" && l.Host == me.Host && l.Boot == me.Boot,
		Netns: l.Netns, Workload: l.Workload, WorkloadUID: l.WorkloadUID, Released: l.Released,
	}
}

// boot says in a word whether the lease was taken in this host's current
// boot, for the table.
func (r lsRow) boot() string {
	switch {
	case r.Boot == "":
		return "-"
	case r.ThisBoot:
		return "this"
	default:
		return "earlier"
	}
}

// note explains a lease that holds no container.
func (r lsRow) note() string {
	switch {
	case r.Conflict != "":
		return "in use on the LAN by " + cell(r.Conflict)
	case !r.Released.IsZero():
		return "held for " + cell(r.Workload) + " since " + r.Released.Local().Format(time.RFC3339)
	}
	return ""
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return cell(s)
}

func (c *cli) ls(args []string) error {
	fs := c.flags("ls")
	sf := c.storeFlags(fs)
	network := fs.String("network", "", "network (default: all)")
	output := fs.String("o", "table", "output: table or json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return usageError(fmt.Sprintf("-o %q: want table or json", *output))
	}
	nets, err := sf.networks(*network)
	if err != nil {
		return err
	}
	rows := []lsRow{}
	me, _ := holder.Current() // unknown: no lease shows as of this boot
	var damaged []error
	for _, n := range nets {
		st, err := sf.open(n)
		if err != nil {
			return err
		}
		var leases []store.Lease
		err = store.WithLock(context.Background(), st, func() error {
			var lerr error
			leases, lerr = st.List(context.Background())
			return lerr
		})
		_ = st.Close() // read-only use; nothing to lose
		if err != nil && !errors.Is(err, store.ErrCorrupt) {
			return err
		}
		if err != nil {
			damaged = append(damaged, fmt.Errorf("network %s: %w", n, err))
		}
		for _, l := range leases {
			rows = append(rows, newLsRow(n, l, me))
		}
	}
	if *output == "json" {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rows); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		_, _ = fmt.Fprintln(tw, "NETWORK\tIP\tCONTAINER ID\tIFNAME\tCREATED\tWORKLOAD\tNETNS\tHOST\tBOOT\tNOTE") // errors surface at Flush
		for _, r := range rows {
			_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(r.Network), r.IP, cell(r.ContainerID), cell(r.IfName),
				r.Created.Local().Format(time.RFC3339), dash(r.Workload), dash(r.Netns), dash(r.Host), r.boot(), r.note()) // errors surface at Flush
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(damaged) > 0 {
		return fmt.Errorf("damaged records (run fsck): %w", errors.Join(damaged...))
	}
	return nil
}

func (c *cli) release(args []string) (err error) {
	fs := c.flags("release")
	sf := c.storeFlags(fs)
	network := fs.String("network", "", "network")
	ipFlag := fs.String("ip", "", "address to release")
	id := fs.String("container", "", "container ID whose leases to release")
	ifName := fs.String("ifname", "", "interface (with --container; default: all of them)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *network == "" || (*ipFlag == "") == (*id == "") {
		return usageError("release needs --network and exactly one of --ip and --container")
	}
	st, err := sf.open(*network)
	if err != nil {
		return err
	}
	defer closeStore(st, &err)
	ctx := context.Background()
	return store.WithLock(ctx, st, func() error {
		if *ipFlag != "" {
			ip, err := netip.ParseAddr(*ipFlag)
			if err != nil {
				return usageError(fmt.Sprintf("--ip %q: %v", *ipFlag, err))
			}
			if err := st.Release(ctx, ip.Unmap()); err != nil {
				return err
			}
			_, err = fmt.Fprintf(c.stdout, "released %s\n", ip)
			return err
		}
		// All interfaces of the container: found from the lease list, as
		// an operator may not know the interface names.
		leases, err := st.List(ctx)
		if err != nil && !errors.Is(err, store.ErrCorrupt) {
			return err
		}
		n := 0
		for _, l := range leases {
			if l.ContainerID != *id || (*ifName != "" && l.IfName != *ifName) {
				continue
			}
			if err := st.Release(ctx, l.IP); err != nil {
				return err
			}
			n++
			if _, err := fmt.Fprintf(c.stdout, "released %s (%s/%s)\n", l.IP, l.ContainerID, l.IfName); err != nil {
				return err
			}
		}
		if n == 0 {
			return fmt.Errorf("container %q holds no lease in network %q", *id, *network)
		}
		return nil
	})
}

func (c *cli) fsck(args []string) error {
	fs := c.flags("fsck")
	sf := c.storeFlags(fs)
	network := fs.String("network", "", "network (default: all)")
	repair := fs.Bool("repair", false, "repair what is found")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	nets, err := sf.networks(*network)
	if err != nil {
		return err
	}
	unrepaired := 0
	for _, n := range nets {
		st, err := sf.open(n)
		if err != nil {
			return err
		}
		var rep store.FsckReport
		err = store.WithLock(context.Background(), st, func() error {
			var ferr error
			rep, ferr = st.Fsck(context.Background(), *repair)
			return ferr
		})
		err = errors.Join(err, st.Close())
		for _, p := range rep.Problems {
			if !p.Repaired && p.Kind != "foreign" { // another program's key: a note, never repaired
				unrepaired++
			}
			if _, werr := fmt.Fprintf(c.stdout, "%s: %s\n", n, printable(p.String())); werr != nil {
				return werr
			}
		}
		if err != nil {
			return fmt.Errorf("network %s: %w", n, err)
		}
		note := ""
		if rep.Pending > 0 {
			note = fmt.Sprintf(" (%d reservations of calls in progress or dead, not yet permanent: "+
				"the store deletes those of dead calls when they expire)", rep.Pending)
		}
		if _, err := fmt.Fprintf(c.stdout, "%s: %d leases, %d attachments, %d problems%s\n", n, rep.Leases, rep.Attachments, len(rep.Problems), note); err != nil {
			return err
		}
	}
	if unrepaired > 0 {
		return fmt.Errorf("%d problems found; run fsck --repair to fix them", unrepaired)
	}
	return nil
}
