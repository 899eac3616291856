package logging

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFileGetsInfoStderrOnlyWarnings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "maclan.log")
	var stderr bytes.Buffer
	log, closeFn := New(Options{File: path, Stderr: &stderr}, "plugin", "maclan")
	log.Info("ADD", "container", "c1")
	closeFn()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b); !strings.Contains(got, "msg=ADD") || !strings.Contains(got, "container=c1") || !strings.Contains(got, "plugin=maclan") {
		t.Errorf("log file got %q, want an ADD line with container and plugin", got)
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr got %q, want nothing", stderr.String())
	}

	stderr.Reset()
	log, closeFn = New(Options{Stderr: &stderr})
	log.Info("routine")
	log.Warn("odd")
	closeFn()
	if got := stderr.String(); strings.Contains(got, "routine") || !strings.Contains(got, "odd") {
		t.Errorf("stderr got %q, want the warning only", got)
	}
}

func TestBadFileAndLevelFallBack(t *testing.T) {
	var stderr bytes.Buffer
	log, closeFn := New(Options{File: filepath.Join(t.TempDir(), "no", "such", "dir", "x.log"), Level: "loud", Stderr: &stderr})
	defer closeFn()
	log.Warn("still logged")
	got := stderr.String()
	for _, want := range []string{`unknown level \"loud\"`, `field \"logFile\"`, "still logged"} {
		if !strings.Contains(got, want) {
			t.Errorf("stderr got %q, want it to contain %q", got, want)
		}
	}
}

func TestParseLevel(t *testing.T) {
	for _, s := range []string{"debug", "INFO", "warn", "warning", "error"} {
		if _, err := ParseLevel(s, 0); err != nil {
			t.Errorf("ParseLevel(%q): %v", s, err)
		}
	}
	if _, err := ParseLevel("verbose", 0); err == nil {
		t.Error("ParseLevel(verbose): got no error, want one")
	}
}
