// Command report turns the samples of `make bench` (integration/bench_test.go
// and bench/ipamscale) into docs/benchmarks.md, from the template beside it,
// and a PNG plot of IPAM latency against the number of existing leases.
//
//	go run ./bench/report -in bench.json -md docs/benchmarks.md -png docs/ipam-scale.png
package main

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/maclan-cni/maclan/integration/samples"
)

//go:embed benchmarks.md.tmpl
var docTemplate string

func main() {
	in := flag.String("in", "", "samples written by the bench (JSON)")
	md := flag.String("md", "docs/benchmarks.md", "Markdown file to write")
	png := flag.String("png", "docs/ipam-scale.png", "plot to write")
	flag.Parse()
	if err := run(*in, *md, *png); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(in, md, png string) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var r samples.Report
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	d := build(&r)
	if r.IPAM != nil && png != "" {
		if err := plotIPAM(r.IPAM, png); err != nil {
			return err
		}
		d.Plot = filepath.Base(png)
	}
	tmpl, err := template.New("doc").Parse(docTemplate)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, d); err != nil {
		return err
	}
	if err := os.WriteFile(md, out.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Print(d.Summary)
	return nil
}

// stats of one series.
type stats struct{ median, p95, cpu time.Duration }

func us(v int64) time.Duration { return time.Duration(v) * time.Microsecond }

func quantile(v []int64, q float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(q*float64(len(s)-1) + 0.5)
	return us(s[i])
}

// statsOf of a missing series (nil) is all zeros.
func statsOf(s *samples.Series) stats {
	if s == nil {
		return stats{}
	}
	return stats{median: quantile(s.WallUS, 0.5), p95: quantile(s.WallUS, 0.95), cpu: quantile(s.CPUUS, 0.5)}
}

// ms formats a duration in milliseconds with sensible precision.
func ms(d time.Duration) string {
	f := float64(d) / float64(time.Millisecond)
	switch {
	case f >= 100:
		return fmt.Sprintf("%.0f ms", f)
	case f >= 10:
		return fmt.Sprintf("%.1f ms", f)
	default:
		return fmt.Sprintf("%.2f ms", f)
	}
}

func ratio(a, b time.Duration) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", float64(a)/float64(b))
}

// Doc is what the template sees.
type Doc struct {
	Started, Host string
	Main          string // Markdown table: workloads
	Floor         string // Markdown table: the floor under an ADD
	Parallel      string // Markdown table
	ParallelADD   string // the 100 ADDs' ratio, for the text
	SequentialADD string // the sequential ADD's ratio, for the text
	FloorRatio    string // maclan's ADD against the floor, for the text
	IPAMADD       string // IPAM alone at 50,000 leases, ADD speed-up, for the text
	IPAMDEL       string // ... and DEL
	Trace         string // Markdown table
	IPAM          string // Markdown table
	Targets       string // Markdown table
	Notes         []string
	Plot          string
	Summary       string // plain text for the terminal
}

type target struct {
	what, want, got string
	met             bool
}

func build(r *samples.Report) *Doc {
	d := &Doc{Started: r.Started, Host: r.Host}
	var tb, sum strings.Builder
	var targets []target
	tb.WriteString("| workload | maclan median | p95 | CPU | reference median | p95 | CPU | ratio (median) | ratio (CPU) |\n")
	tb.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, w := range r.Workloads {
		m, ok1 := w.Ops["maclan"]
		ref, ok2 := w.Ops["reference"]
		if !ok1 || !ok2 {
			continue
		}
		a, b := statsOf(m), statsOf(ref)
		fmt.Fprintf(&tb, "| %s (n=%d) | %s | %s | %s | %s | %s | %s | %s | %s |\n", w.Name, len(m.WallUS),
			ms(a.median), ms(a.p95), ms(a.cpu), ms(b.median), ms(b.p95), ms(b.cpu), ratio(a.median, b.median), ratio(a.cpu, b.cpu))
		fmt.Fprintf(&sum, "%-24s maclan %9s (p95 %9s, CPU %9s)  reference %9s (p95 %9s, CPU %9s)  ratio %s\n",
			w.Name, ms(a.median), ms(a.p95), ms(a.cpu), ms(b.median), ms(b.p95), ms(b.cpu), ratio(a.median, b.median))
		d.Notes = append(d.Notes, w.Notes...)
		rt := float64(a.median) / float64(b.median)
		switch w.Name {
		case "sequential ADD (IPv4)":
			d.SequentialADD = fmt.Sprintf("%.3fx", rt)
			targets = append(targets, target{"sequential ADD", "≤ 0.5x", fmt.Sprintf("%.2fx", rt), rt <= 0.5})
		case "sequential DEL (IPv4)":
			targets = append(targets, target{"sequential DEL", "≤ 1x", fmt.Sprintf("%.2fx", rt), rt <= 1})
		case "dual-stack ADD":
			targets = append(targets, target{"dual-stack ADD", "≤ 0.1x", fmt.Sprintf("%.3fx", rt), rt <= 0.1})
		case "dual-stack DEL":
			targets = append(targets, target{"dual-stack DEL", "≤ 1x", fmt.Sprintf("%.2fx", rt), rt <= 1})
		}
	}
	d.Main = tb.String()
	var floorTargets []target
	d.Floor, floorTargets = floorTable(r, &sum)
	targets = append(targets, floorTargets...)
	d.FloorRatio, d.IPAMADD, d.IPAMDEL = "-", "-", "-"
	if len(floorTargets) > 0 {
		d.FloorRatio = floorTargets[0].got
	}

	if len(r.Parallel) > 0 {
		var pb strings.Builder
		pb.WriteString("| 100 at once | maclan wall (median of rounds) | CPU per op | failures | duplicates | reference wall | CPU per op | failures | duplicates | ratio (wall) |\n")
		pb.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, op := range []string{"ADD", "DEL"} {
			var cells [2]struct {
				wall, cpu  []int64
				fail, dups int
				n, rounds  int
			}
			for _, pr := range r.Parallel {
				if pr.Op != op {
					continue
				}
				i := 0
				if pr.Flavour == "reference" {
					i = 1
				}
				c := &cells[i]
				c.wall = append(c.wall, pr.WallUS)
				c.cpu = append(c.cpu, pr.CPUUS/int64(max(pr.N, 1)))
				c.fail += pr.Failures
				c.dups += pr.Dups
				c.n, c.rounds = pr.N, c.rounds+1
			}
			a, b := quantile(cells[0].wall, 0.5), quantile(cells[1].wall, 0.5)
			fmt.Fprintf(&pb, "| %d %s, %d rounds | %s | %s | %d | %d | %s | %s | %d | %d | %s |\n", cells[0].n, op, cells[0].rounds,
				ms(a), ms(quantile(cells[0].cpu, 0.5)), cells[0].fail, cells[0].dups,
				ms(b), ms(quantile(cells[1].cpu, 0.5)), cells[1].fail, cells[1].dups, ratio(a, b))
			fmt.Fprintf(&sum, "parallel %-15s maclan %9s  reference %9s  ratio %s  failures %d/%d duplicates %d/%d\n",
				op, ms(a), ms(b), ratio(a, b), cells[0].fail, cells[1].fail, cells[0].dups, cells[1].dups)
			rt := float64(a) / float64(b)
			ok := cells[0].fail == 0 && cells[0].dups == 0
			if op == "ADD" {
				d.ParallelADD = fmt.Sprintf("%.2fx", rt)
				targets = append(targets, target{"100 parallel ADDs (wall)", "≤ 0.5x", fmt.Sprintf("%.2fx", rt), rt <= 0.5 && ok})
			} else {
				targets = append(targets, target{"100 parallel DELs (wall)", "≤ 1x", fmt.Sprintf("%.2fx", rt), rt <= 1 && ok})
			}
		}
		d.Parallel = pb.String()
	}

	if len(r.Trace) > 0 {
		d.Trace = traceTable(r.Trace)
	}

	if r.IPAM != nil {
		var ib strings.Builder
		ib.WriteString("| leases | op | maclan-ipam median | p95 | CPU | host-local median | p95 | CPU | speed-up (median) | maclan vs its own 0-lease figure |\n")
		ib.WriteString("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		zero := map[string]time.Duration{}
		for _, sz := range r.IPAM.Sizes {
			for _, op := range []string{"ADD", "DEL"} {
				a, b := statsOf(sz.Ops["maclan "+op]), statsOf(sz.Ops["reference "+op])
				if sz.Leases == 0 {
					zero[op] = a.median
				}
				self := ratio(a.median, zero[op])
				fmt.Fprintf(&ib, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", sz.Leases, op,
					ms(a.median), ms(a.p95), ms(a.cpu), ms(b.median), ms(b.p95), ms(b.cpu), ratio(b.median, a.median), self)
				fmt.Fprintf(&sum, "ipam %6d %s maclan %9s  reference %9s  speed-up %s  vs own 0: %s\n", sz.Leases, op, ms(a.median), ms(b.median), ratio(b.median, a.median), self)
				if sz.Leases == 50000 {
					sp := float64(b.median) / float64(a.median)
					own := float64(a.median) / float64(zero[op])
					if op == "ADD" {
						d.IPAMADD = fmt.Sprintf("%.0fx", sp)
					} else {
						d.IPAMDEL = fmt.Sprintf("%.0fx", sp)
					}
					targets = append(targets,
						target{"IPAM " + op + " at 50,000 leases: speed-up", "≥ 100x", fmt.Sprintf("%.0fx", sp), sp >= 100},
						target{"IPAM " + op + " at 50,000 leases: vs maclan at 0", "≤ 2x", fmt.Sprintf("%.2fx", own), own <= 2})
				}
			}
		}
		if sw := r.IPAM.Sweep; sw != nil {
			fmt.Fprintf(&ib, "\nThe first call after a reboot gives back every lease this host took in the earlier boot: "+
				"with %d such leases its ADD took %s, the ADD after it %s.\n", sw.Leases, ms(us(sw.FirstUS)), ms(us(sw.NextUS)))
			fmt.Fprintf(&sum, "ipam sweep after boot of %d leases: first ADD %s, next %s\n", sw.Leases, ms(us(sw.FirstUS)), ms(us(sw.NextUS)))
		}
		d.IPAM = ib.String()
	}

	var tt strings.Builder
	tt.WriteString("| target | wanted (maclan/reference) | this run | met |\n| --- | --- | ---: | --- |\n")
	for _, t := range targets {
		met := "no"
		if t.met {
			met = "yes"
		}
		fmt.Fprintf(&tt, "| %s | %s | %s | %s |\n", t.what, t.want, t.got, met)
		fmt.Fprintf(&sum, "target %-45s %-8s %8s %s\n", t.what, t.want, t.got, met)
	}
	d.Targets = tt.String()
	d.Summary = sum.String()
	return d
}

// floorTable puts maclan's sequential ADD beside the floor measured in the
// same run (integration/bench_floor_test.go): an empty Go program's exec
// plus one macvlan made straight into a namespace.
func floorTable(r *samples.Report, sum *strings.Builder) (string, []target) {
	var floor, seq *samples.Workload
	for _, w := range r.Workloads {
		switch w.Name {
		case "floor":
			floor = w
		case "sequential ADD (IPv4)":
			seq = w
		}
	}
	if floor == nil {
		return "", nil
	}
	var b strings.Builder
	b.WriteString("| what | median | p95 | CPU |\n| --- | ---: | ---: | ---: |\n")
	row := func(name string, s stats) {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", name, ms(s.median), ms(s.p95), ms(s.cpu))
	}
	var total stats
	for _, op := range []string{"empty Go exec", "macvlan into netns", "macvlan add + move"} {
		ser, ok := floor.Ops[op]
		if !ok {
			continue
		}
		s := statsOf(ser)
		row(fmt.Sprintf("%s (n=%d)", op, len(ser.WallUS)), s)
		if op != "macvlan add + move" {
			total.median += s.median
			total.cpu += s.cpu
		}
	}
	fmt.Fprintf(&b, "| **floor**: empty Go exec + macvlan into netns | %s | | %s |\n", ms(total.median), ms(total.cpu))
	if seq == nil || seq.Ops["maclan"] == nil || total.median == 0 {
		return b.String(), nil
	}
	a := statsOf(seq.Ops["maclan"])
	rt := float64(a.median) / float64(total.median)
	fmt.Fprintf(&b, "| maclan sequential ADD (IPv4) | %s | %s | %s |\n", ms(a.median), ms(a.p95), ms(a.cpu))
	fmt.Fprintf(&b, "| **maclan ADD / floor** | %.2fx | | %.2fx |\n", rt, float64(a.cpu)/float64(max(total.cpu, 1)))
	fmt.Fprintf(sum, "floor %s (exec %s + link)  maclan ADD %s  = %.2fx the floor\n", ms(total.median), ms(statsOf(floor.Ops["empty Go exec"]).median), ms(a.median), rt)
	return b.String(), []target{{"maclan ADD against the floor (empty Go exec + macvlan into netns)", "≤ 2x the floor", fmt.Sprintf("%.2fx", rt), rt <= 2}}
}

// traceTable gives the median of each traced step, in the order the steps
// first appear per command.
func traceTable(tr map[string][]int64) string {
	var keys []string
	for k := range tr {
		keys = append(keys, k)
	}
	order := func(k string) string {
		// "ipv4 ADD <step>": group by stack and command; start-up first,
		// total last, the steps in between in the order of the code.
		f := strings.SplitN(k, " ", 3)
		rank := "5"
		switch {
		case len(f) < 3:
		case f[2] == "start-up":
			rank = "0"
		case f[2] == "total":
			rank = "9"
		default:
			rank = "5" + stepRank(f[2])
		}
		return f[0] + f[1] + rank
	}
	slices.SortFunc(keys, func(a, b string) int { return strings.Compare(order(a), order(b)) })
	var b strings.Builder
	b.WriteString("| call | step | median | p95 |\n| --- | --- | ---: | ---: |\n")
	for _, k := range keys {
		f := strings.SplitN(k, " ", 3)
		if len(f) < 3 {
			continue
		}
		fmt.Fprintf(&b, "| %s %s | %s | %s | %s |\n", f[0], f[1], f[2], ms(quantile(tr[k], 0.5)), ms(quantile(tr[k], 0.95)))
	}
	return b.String()
}

// stepRank orders the steps as the code runs them.
func stepRank(step string) string {
	steps := []string{"skel", "logger", "parse", "ipam start", "netns+handles", "master lookup", "link create", "link delete",
		"ipam exec", "ipam wait", "configure: enter netns", "configure: sysctls", "configure: addresses+up", "configure: DAD wait",
		"configure: routes", "configure: announce", "print result"}
	if i := slices.Index(steps, step); i >= 0 {
		return fmt.Sprintf("%02d", i)
	}
	return "99" + step
}
