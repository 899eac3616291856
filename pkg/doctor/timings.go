package doctor

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxTimedCalls is how many of the last calls the summary reads.
const maxTimedCalls = 200

// call is the timing of one ADD or DEL, from its log line.
type call struct {
	cmd    string
	total  time.Duration
	phases map[string]time.Duration
}

// The log line's fields, compiled on first use: doctor is linked into
// maclan's executable, whose every CNI call would otherwise pay for them.
var (
	reCmd      = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\bcmd=(ADD|DEL)\b`) })
	reDuration = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\bduration=(\S+)`) })
	rePhase    = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\bphase\.([a-z]+)=(\S+)`) })
)

// parseCall reads the timing of one log line of the plugin (see run in
// plugins/maclan: with logLevel debug its "ok"/"failed" line carries
// phase.NAME=DURATION for each phase). Other lines give false.
func parseCall(line string) (call, bool) {
	m := reCmd().FindStringSubmatch(line)
	phases := rePhase().FindAllStringSubmatch(line, -1)
	if m == nil || len(phases) == 0 || !strings.Contains(line, "plugin=maclan ") {
		return call{}, false
	}
	c := call{cmd: m[1], phases: map[string]time.Duration{}}
	if d := reDuration().FindStringSubmatch(line); d != nil {
		c.total, _ = time.ParseDuration(d[1]) // unreadable: 0
	}
	for _, p := range phases {
		if d, err := time.ParseDuration(p[2]); err == nil {
			c.phases[p[1]] = d
		}
	}
	return c, true
}

// checkTimings summarises the last calls logged in logFile: per command,
// the median and slowest call and the phase with the largest median.
func checkTimings(logFile string) []Result {
	if logFile == "" {
		return []Result{skip("timings", "no \"logFile\": set one, with \"logLevel\": \"debug\", to see the time of each phase")}
	}
	f, err := os.Open(logFile)
	if err != nil {
		return []Result{skip("timings", "%v", err)}
	}
	defer f.Close()
	var calls []call
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if c, ok := parseCall(sc.Text()); ok {
			calls = append(calls, c)
			if len(calls) > 2*maxTimedCalls {
				calls = slices.Clone(calls[len(calls)-maxTimedCalls:])
			}
		}
	}
	if len(calls) > maxTimedCalls {
		calls = calls[len(calls)-maxTimedCalls:]
	}
	if len(calls) == 0 {
		return []Result{skip("timings", "%s has no timed ADD or DEL: set \"logLevel\": \"debug\"", logFile)}
	}
	var rs []Result
	for _, cmd := range []string{"ADD", "DEL"} {
		if r, found := summarise(cmd, calls); found {
			rs = append(rs, r)
		}
	}
	return rs
}

func summarise(cmd string, calls []call) (Result, bool) {
	var totals []time.Duration
	byPhase := map[string][]time.Duration{}
	for _, c := range calls {
		if c.cmd != cmd {
			continue
		}
		totals = append(totals, c.total)
		for p, d := range c.phases {
			byPhase[p] = append(byPhase[p], d)
		}
	}
	if len(totals) == 0 {
		return Result{}, false
	}
	slowPhase, slowMedian := "", time.Duration(-1)
	names := make([]string, 0, len(byPhase))
	for p := range byPhase {
		names = append(names, p)
	}
	slices.Sort(names)
	var parts []string
	for _, p := range names {
		m := median(byPhase[p])
		parts = append(parts, fmt.Sprintf("%s %s", p, round(m)))
		if m > slowMedian {
			slowPhase, slowMedian = p, m
		}
	}
	return ok("timings", "%s: last %d calls, median %s, slowest %s; slowest phase %s (median %s, max %s); phase medians: %s",
		cmd, len(totals), round(median(totals)), round(slices.Max(totals)), slowPhase, round(slowMedian),
		round(slices.Max(byPhase[slowPhase])), strings.Join(parts, ", ")), true
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)/2] // the lower middle of an even count
}

func round(d time.Duration) time.Duration {
	if d > time.Millisecond {
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
