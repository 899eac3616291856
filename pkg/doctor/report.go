package doctor

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Status is the outcome of one check.
type Status string

// Outcomes: FAIL makes the exit status non-zero; SKIP is a check that could
// not run (and says why).
const (
	OK   Status = "OK"
	Warn Status = "WARN"
	Fail Status = "FAIL"
	Skip Status = "SKIP"
)

// Result is one line of the report: what was checked, what was seen and,
// unless all is well, the fix in one sentence.
type Result struct {
	Network string `json:"network,omitempty"`
	Check   string `json:"check"`
	Status  Status `json:"status"`
	Saw     string `json:"saw"`
	Fix     string `json:"fix,omitempty"`
}

func ok(check, format string, args ...any) Result {
	return Result{Check: check, Status: OK, Saw: fmt.Sprintf(format, args...)}
}

func skip(check, format string, args ...any) Result {
	return Result{Check: check, Status: Skip, Saw: fmt.Sprintf(format, args...)}
}

func warn(check, fix, format string, args ...any) Result {
	return Result{Check: check, Status: Warn, Saw: fmt.Sprintf(format, args...), Fix: fix}
}

func fail(check, fix, format string, args ...any) Result {
	return Result{Check: check, Status: Fail, Saw: fmt.Sprintf(format, args...), Fix: fix}
}

// Report is what one run found.
type Report struct {
	Checks   []Result `json:"checks"`
	Failed   int      `json:"failed"`
	Warnings int      `json:"warnings"`
	Seconds  float64  `json:"seconds"`
}

func newReport(results []Result, took time.Duration) Report {
	r := Report{Checks: results, Seconds: took.Seconds()}
	for _, c := range results {
		switch c.Status {
		case Fail:
			r.Failed++
		case Warn:
			r.Warnings++
		}
	}
	return r
}

func (r Report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeText prints one line per check, under a heading per network:
//
//	FAIL  mac-filter   eth0: the gateway ... answered ...  fix: ...
func (r Report) writeText(w io.Writer) error {
	var b strings.Builder
	network := "\x00"
	for _, c := range r.Checks {
		if c.Network != network {
			network = c.Network
			if network != "" {
				fmt.Fprintf(&b, "network %s\n", network)
			}
		}
		fmt.Fprintf(&b, "%-4s  %-11s  %s", c.Status, c.Check, c.Saw)
		if c.Fix != "" {
			fmt.Fprintf(&b, "  fix: %s", c.Fix)
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "%d checks, %d failed, %d warnings, in %.1fs\n", len(r.Checks), r.Failed, r.Warnings, r.Seconds)
	_, err := io.WriteString(w, b.String())
	return err
}
