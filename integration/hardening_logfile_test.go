//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
)

// TestHardeningLogFile: "logFile" comes from the network's configuration,
// which the plugins (root) must not let write anywhere (pkg/logging). Each
// hostile value below is refused: ADD still succeeds, stderr carries a
// warning naming the field and the reason, and the file the value points
// at is unchanged (or not created).
func TestHardeningLogFile(t *testing.T) {
	skipUnlessMaclanLogs(t)
	const before = "precious\n"
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "outside.log")
	hardeningWriteFile(t, outside, before)
	link := filepath.Join(dir, "link.log")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	open := t.TempDir()
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	inOpen := filepath.Join(open, "x.log")
	hardeningWriteFile(t, inOpen, before)
	fifo := filepath.Join(dir, "fifo.log")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// A reader keeps a blocking open of the FIFO from hanging the plugin,
	// and shows whether anything was written into it.
	reader, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	cwd := t.TempDir() // the plugin's working directory

	n := newNet(t)
	for _, tc := range []struct{ name, logFile, reason, unchanged string }{
		{"symlink to a file outside", link, "symbolic link", outside},
		{"relative path", "rel.log", "not an absolute path", ""},
		{"file in a 0777 directory", inOpen, "writable by group or others", inOpen},
		{"FIFO", fifo, "not a regular file", ""},
		{"not a .log name", filepath.Join(dir, "ld.so.preload"), `must end in \".log\"`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := n.mainConf()
			conf["cniVersion"], conf["name"], conf["logFile"] = "1.0.0", n.name, tc.logFile
			stdin := mustJSON(t, conf)
			c := newContainer(t)
			call := func(verb string) (stdout, stderr string, err error) {
				rc := n.rawCall(pluginType, verb, c.name, c, "eth0", stdin)
				rc.cmd.Dir = cwd
				err = rc.run()
				return rc.stdout.String(), rc.stderr.String(), err
			}
			t.Cleanup(func() {
				if _, _, err := call("DEL"); err != nil {
					t.Logf("cleanup DEL: %v", err)
				}
			})
			stdout, stderr, err := call("ADD")
			if err != nil {
				t.Fatalf("ADD: %v (stdout %q, stderr %q)", err, stdout, stderr)
			}
			var res current.Result
			decodeOnly(t, "ADD stdout", []byte(stdout), &res)
			if len(res.IPs) != 2 {
				t.Errorf("ADD stdout %s: want 2 addresses", stdout)
			}
			warned := false
			for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
				if line == "" {
					continue
				}
				l, err := parseLogfmt(line)
				if err != nil {
					t.Errorf("stderr line %q: %v", line, err)
					continue
				}
				if l["plugin"] == "maclan" && l["level"] == "WARN" && strings.Contains(l["error"], `field "logFile"`) && strings.Contains(line, tc.reason) {
					warned = true
				}
			}
			if !warned {
				t.Errorf("stderr %q: want a warning from maclan naming logFile and %q", stderr, tc.reason)
			}
			if tc.unchanged != "" {
				if b, err := os.ReadFile(tc.unchanged); err != nil || string(b) != before {
					t.Errorf("%s: got %q, %v; want it unchanged", tc.unchanged, b, err)
				}
			}
		})
	}
	for _, p := range []string{filepath.Join(cwd, "rel.log"), filepath.Join(dir, "ld.so.preload")} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s: got %v, want no such file", p, err)
		}
	}
	if n, err := reader.Read(make([]byte, 64)); n != 0 {
		t.Errorf("the FIFO got %d bytes (%v), want none", n, err)
	}
	n.wantNoLeases()
}

func hardeningWriteFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
