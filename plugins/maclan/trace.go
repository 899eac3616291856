package main

import (
	"fmt"
	"io"
	"log/slog"
	"time"
)

// tracer times the steps of a call. With MACLAN_TRACE=1 it prints one line
// per step on stderr, "maclan-trace <step> <µs>"; its first line,
// "maclan-trace main <µs since the epoch>", is the wall clock at the top of
// main, from which a caller that noted when it forked the plugin (the
// benchmarks) computes the process start-up. With logLevel debug it also
// sums the steps into the phases an operator reads on the call's log line
// (see phaseOf). Off, it costs one branch per step.
type tracer struct {
	w       io.Writer // nil: no trace lines
	collect bool      // sum the steps into phases
	last    time.Time
	phases  []phaseTime // in the order each phase first ended
}

// phaseTime is the time a call spent in one phase.
type phaseTime struct {
	name string
	d    time.Duration
}

func newTracer(on bool, w io.Writer) *tracer {
	if !on {
		return &tracer{}
	}
	t := &tracer{w: w, last: time.Now()}
	fmt.Fprintf(w, "maclan-trace main %d\n", t.last.UnixMicro())
	return t
}

// collectPhases starts summing the steps into phases from now on.
func (t *tracer) collectPhases() {
	t.collect = true
	if t.w == nil {
		t.last = time.Now()
	}
}

// step ends the step called name, which began where the previous one ended.
func (t *tracer) step(name string) {
	if t.w == nil && !t.collect {
		return
	}
	now := time.Now()
	d := now.Sub(t.last)
	t.last = now
	if t.w != nil {
		fmt.Fprintf(t.w, "maclan-trace %s %d\n", name, d.Microseconds())
	}
	if t.collect {
		t.add(phaseOf(name), d)
	}
}

// mark prints a line that is not a step (MACLAN_TRACE=1): it takes no
// time from the phases.
func (t *tracer) mark(name string) {
	if t.w != nil {
		fmt.Fprintf(t.w, "maclan-trace %s -\n", name)
	}
}

func (t *tracer) add(phase string, d time.Duration) {
	if phase == "" {
		return
	}
	for i := range t.phases {
		if t.phases[i].name == phase {
			t.phases[i].d += d
			return
		}
	}
	t.phases = append(t.phases, phaseTime{phase, d})
}

// phaseAttr is the log attribute "phase" with one duration per phase seen,
// written by slog's text handler as phase.config=85µs phase.ipam=3.2ms ...
// (maclan doctor reads them back). Without phases it is empty, and slog
// leaves an empty group out.
func (t *tracer) phaseAttr() slog.Attr {
	attrs := make([]any, 0, len(t.phases))
	for _, p := range t.phases {
		attrs = append(attrs, slog.Duration(p.name, p.d))
	}
	return slog.Group("phase", attrs...)
}

// phaseOf maps a step to the phase of the call it belongs to: config (the
// configuration parsed), netns (the container namespace opened), ipam (the
// IPAM forked and waited for; it runs while the link is made, so this is
// the wait the call saw), link (master looked up, link created, renamed
// and found again; the link is created straight inside the container's
// namespace, so "move" is part of it), addresses (sysctls, addresses, up,
// routes), dad (the wait for IPv6 duplicate address detection) and
// announce (gratuitous ARP and unsolicited NA). The start-up steps before
// the logger exists and printing the result belong to none.
func phaseOf(step string) string {
	switch step {
	case "parse":
		return "config"
	case "netns+handles", "configure: enter netns":
		return "netns"
	case "ipam start", "ipam wait":
		return "ipam"
	case "master lookup", "link create", "link delete":
		return "link"
	case "configure: sysctls", "configure: addresses+up", "configure: routes":
		return "addresses"
	case "configure: DAD wait":
		return "dad"
	case "configure: announce":
		return "announce"
	}
	return ""
}
