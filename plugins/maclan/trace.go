package main

import (
	"fmt"
	"io"
	"time"
)

// tracer prints how long each step of a call took, one line per step on
// stderr, when MACLAN_TRACE=1: "maclan-trace <step> <µs>". Its first line,
// "maclan-trace main <µs since the epoch>", is the wall clock at the top of
// main, from which a caller that noted when it forked the plugin (the
// benchmarks) computes the process start-up. Off, it costs one branch.
type tracer struct {
	w    io.Writer // nil: off
	last time.Time
}

func newTracer(on bool, w io.Writer) *tracer {
	if !on {
		return &tracer{}
	}
	t := &tracer{w: w, last: time.Now()}
	fmt.Fprintf(w, "maclan-trace main %d\n", t.last.UnixMicro())
	return t
}

// step ends the step called name, which began where the previous one ended.
func (t *tracer) step(name string) {
	if t.w == nil {
		return
	}
	now := time.Now()
	fmt.Fprintf(t.w, "maclan-trace %s %d\n", name, now.Sub(t.last).Microseconds())
	t.last = now
}
