package netcmd

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
)

var lsFlags = []flagSpec{{names: []string{"output", "o"}}, {names: []string{"quiet", "q"}, isBool: true}}

// lsRow is one network of "maclan network ls".
type lsRow struct {
	Name    string   `json:"name"`
	Parent  string   `json:"parent"`
	Mode    string   `json:"mode"`
	Subnets []string `json:"subnets"`
	// Leases counts the addresses held by containers and the host shim;
	// -1 when the IPAM is not maclan-ipam and cannot be read.
	Leases int    `json:"leases"`
	File   string `json:"file"`
	Note   string `json:"note,omitempty"`
}

func ls(e *env, args []string) error {
	p, err := e.parse(args, lsFlags)
	if err != nil {
		return err
	}
	if len(p.args) > 0 {
		return usagef("\"ls\" accepts no arguments, got %q", p.args[0])
	}
	out := p.str("output")
	if out != "" && out != "table" && out != "json" {
		return usagef("-o %q: want table or json", out)
	}
	nets, err := loadNetworks(e.confDir)
	if err != nil {
		return err
	}
	rows := []lsRow{}
	for _, n := range nets {
		if n.isMaclan() {
			rows = append(rows, e.lsRow(n))
		}
	}
	switch {
	case out == "json":
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	case p.bool("quiet"):
		for _, r := range rows {
			if _, err := fmt.Fprintln(e.stdout, r.Name); err != nil {
				return err
			}
		}
		return nil
	}
	return printLs(e, rows)
}

func (e *env) lsRow(n network) lsRow {
	r := lsRow{Name: n.name, Parent: parentName(n.parent()), Leases: -1, File: n.file}
	if n.conf != nil {
		r.Mode = n.conf.Mode
	}
	for _, s := range n.subnets() {
		r.Subnets = append(r.Subnets, s.String())
	}
	if n.err != nil {
		r.Note = "invalid: " + n.err.Error()
		return r
	}
	leases, ok, err := e.leases(n)
	switch {
	case err != nil:
		r.Note = "leases unreadable: " + err.Error()
	case !ok:
		r.Note = "IPAM " + n.conf.IPAM.Type + ": leases not kept by maclan"
	default:
		r.Leases = 0
		for _, l := range leases {
			if l.inUse() {
				r.Leases++
			}
		}
	}
	return r
}

func printLs(e *env, rows []lsRow) error {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "NAME\tPARENT\tMODE\tSUBNETS\tLEASES\tNOTE") // errors surface at Flush
	for _, r := range rows {
		leases := "-"
		if r.Leases >= 0 {
			leases = strconv.Itoa(r.Leases)
		}
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Parent, r.Mode, strings.Join(r.Subnets, ","), leases, r.Note) // errors surface at Flush
	}
	return tw.Flush()
}
