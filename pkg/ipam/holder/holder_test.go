package holder

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCurrentOverrides(t *testing.T) {
	t.Setenv(hostEnv, "host-a")
	t.Setenv(bootEnv, "boot-1")
	id, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	if id != (Identity{Host: "host-a", Boot: "boot-1", MachineID: true}) {
		t.Errorf("got %+v", id)
	}
	if bt := BootTime(); !bt.IsZero() {
		t.Errorf("boot time %v under a simulated boot, want zero", bt)
	}
}

func TestCurrentReadsTheKernel(t *testing.T) {
	t.Setenv(hostEnv, "")
	t.Setenv(bootEnv, "")
	id, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	if id.Host == "" || len(id.Boot) != 36 {
		t.Errorf("got %+v, want a host and a 36-character boot UUID", id)
	}
	if bt := BootTime(); bt.IsZero() || bt.After(time.Now()) {
		t.Errorf("boot time %v, want a time in the past", bt)
	}
}

func TestNetnsGone(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "unmounted")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		gone bool
	}{
		{filepath.Join(dir, "missing"), true},
		{filepath.Join(plain, "below-a-file"), true},
		{plain, true},                // the empty mount point a runtime leaves
		{"/proc/self/ns/net", false}, // a live namespace
	} {
		gone, err := NetnsGone(tc.path)
		if err != nil {
			t.Errorf("%s: %v", tc.path, err)
		}
		if gone != tc.gone {
			t.Errorf("%s: gone = %v, want %v", tc.path, gone, tc.gone)
		}
	}
	if _, err := NetnsGone(""); err == nil {
		t.Error("an empty path must be an error, never 'gone'")
	}
}
