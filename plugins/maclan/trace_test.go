package main

import (
	"bytes"
	"log/slog"
	"regexp"
	"strings"
	"testing"
)

// TestPhasesOnTheLogLine: with logLevel debug the call's log line carries
// one duration per phase, steps of one phase summed, in the form maclan
// doctor reads back.
func TestPhasesOnTheLogLine(t *testing.T) {
	tr := newTracer(false, nil)
	tr.step("skel") // before the logger: not collected
	tr.collectPhases()
	for _, s := range []string{"parse", "ipam start", "netns+handles", "master lookup", "link create",
		"ipam wait", "configure: enter netns", "configure: sysctls", "configure: addresses+up",
		"configure: DAD wait", "configure: routes", "configure: announce", "print result"} {
		tr.step(s)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("ok", "duration", 0, tr.phaseAttr())
	got := regexp.MustCompile(`phase\.([a-z]+)=`).FindAllStringSubmatch(buf.String(), -1)
	var names []string
	for _, m := range got {
		names = append(names, m[1])
	}
	want := "config ipam netns link addresses dad announce"
	if strings.Join(names, " ") != want {
		t.Errorf("got phases %v in %q, want %s", names, buf.String(), want)
	}
}

// TestNoPhasesWhenOff: below debug the line stays as it was.
func TestNoPhasesWhenOff(t *testing.T) {
	tr := newTracer(false, nil)
	tr.step("parse")
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("ok", tr.phaseAttr())
	if strings.Contains(buf.String(), "phase") {
		t.Errorf("got %q, want no phase attributes", buf.String())
	}
}
