//go:build integration

package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// "logFile" and "logLevel" (README, pkg/logging): each plugin call appends
// logfmt lines (log/slog's text handler) to the file, carrying the plugin,
// the command, the container, the network, the interface and, on the last
// line of the call, the outcome and the duration. maclan-ipam reads the same
// two fields from the top level of the net conf it is given, which is
// maclan's: the fields of its "ipam" object are not read. Nothing goes to
// stdout, which carries only the CNI result or error.

func skipUnlessMaclanLogs(t *testing.T) {
	t.Helper()
	if pluginType != "maclan" || ipamType != "maclan-ipam" {
		t.Skip("logFile and logLevel are maclan's and maclan-ipam's")
	}
}

// loggingConf is the main plugin's configuration with a log file and level
// at the top level, and another file and level in the ipam object.
func loggingConf(t *testing.T, n *testNet, level string) (conf map[string]any, logFile, ipamLogFile string) {
	t.Helper()
	dir := t.TempDir()
	logFile = filepath.Join(dir, "maclan.log")
	ipamLogFile = filepath.Join(dir, "ipam-object.log")
	conf = n.mainConf()
	conf["logFile"] = logFile
	conf["logLevel"] = level
	ipam := conf["ipam"].(map[string]any)
	ipam["logFile"] = ipamLogFile
	ipam["logLevel"] = "debug"
	return conf, logFile, ipamLogFile
}

// TestLoggingToFile: ADD, CHECK and DEL through libcni each append, from
// both plugins, a line per call with the command, the container, the
// network, the interface and a duration; earlier lines are left alone.
func TestLoggingToFile(t *testing.T) {
	skipUnlessMaclanLogs(t)
	n := newNet(t)
	conf, logFile, ipamLogFile := loggingConf(t, n, "info")
	c := newContainer(t)
	a := n.attach(n.list("1.0.0", conf), c, "eth0")
	log := &logTail{t: t, path: logFile}

	var res *current.Result
	steps := []struct {
		verb string
		call func() error
	}{
		{"ADD", func() error { res = a.mustAdd(); return nil }},
		{"CHECK", a.check},
		{"DEL", a.del},
	}
	for _, s := range steps {
		if err := s.call(); err != nil {
			t.Fatalf("%s: %v", s.verb, err)
		}
		lines := log.next()
		for _, l := range lines {
			if l["cmd"] != s.verb {
				t.Errorf("%s appended a line of another command: %v", s.verb, l)
			}
		}
		for _, plugin := range []string{"maclan", "maclan-ipam"} {
			l := wantLogLine(t, lines, s.verb+" by "+plugin, map[string]string{
				"plugin": plugin, "cmd": s.verb, "level": "INFO", "msg": "ok",
				"container": c.name, "network": n.name, "ifname": "eth0",
			})
			wantLogDuration(t, l)
		}
		if s.verb == "ADD" {
			v4, v6 := resultIPs(t, res)
			l := wantLogLine(t, lines, "ADD attached", map[string]string{
				"plugin": "maclan", "msg": "attached", "master": masterIf, "mode": "bridge",
				"mac": c.link(t, "eth0").Attrs().HardwareAddr.String(),
			})
			if ips := l["ips"]; !strings.Contains(ips, bareIP(v4)) || !strings.Contains(ips, bareIP(v6)) {
				t.Errorf("attached line ips=%q, want %s and %s", ips, bareIP(v4), bareIP(v6))
			}
		}
	}
	t.Logf("%s:\n%s", logFile, log.seen)
	if _, err := os.Stat(ipamLogFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the ipam object's logFile %s exists (%v); maclan-ipam logs where the top-level logFile says", ipamLogFile, err)
	}
}

// TestLoggingFailedAdd: an ADD that fails (a master that does not exist)
// logs the error at error level, naming the field; the IPAM's ADD and the
// DEL that undoes it are logged too. At logLevel "error" successful calls
// log nothing and the failure still does.
func TestLoggingFailedAdd(t *testing.T) {
	skipUnlessMaclanLogs(t)
	for _, level := range []string{"info", "error"} {
		t.Run(level, func(t *testing.T) {
			n := newNet(t)
			conf, logFile, _ := loggingConf(t, n, level)
			log := &logTail{t: t, path: logFile}

			good := n.attach(n.list("1.0.0", conf), newContainer(t), "eth0")
			good.mustAdd()
			okLines := log.next()
			if level == "error" && len(okLines) != 0 {
				t.Errorf("logLevel error: a successful ADD logged %v, want nothing", okLines)
			}
			if level == "info" && len(okLines) == 0 {
				t.Errorf("logLevel info: a successful ADD logged nothing")
			}
			held := n.heldLeases()

			conf["master"] = "nosuch0"
			c := newContainer(t)
			_, err := n.attach(n.list("1.0.0", conf), c, "eth0").add()
			wantCNIError(t, err, types.ErrInvalidNetworkConfig, "nosuch0")
			lines := log.next()
			l := wantLogLine(t, lines, "failed ADD", map[string]string{
				"plugin": "maclan", "cmd": "ADD", "level": "ERROR", "msg": "failed",
				"code":      strconv.Itoa(int(types.ErrInvalidNetworkConfig)),
				"container": c.name, "network": n.name, "ifname": "eth0",
			})
			if e := l["error"]; !strings.Contains(e, "master") || !strings.Contains(e, "nosuch0") {
				t.Errorf("failed ADD logged error=%q, want the field master and its value nosuch0", e)
			}
			wantLogDuration(t, l)
			var ipamLines []map[string]string
			for _, l := range lines {
				if l["plugin"] == "maclan-ipam" {
					ipamLines = append(ipamLines, l)
				}
			}
			switch level {
			case "error":
				if len(lines) != 1 {
					t.Errorf("logLevel error: the failed ADD logged %v, want its error line only", lines)
				}
			case "info":
				// The address taken while the link was being made is released.
				for _, verb := range []string{"ADD", "DEL"} {
					wantLogLine(t, ipamLines, "IPAM "+verb+" of the failed ADD", map[string]string{
						"cmd": verb, "msg": "ok", "container": c.name,
					})
				}
			}
			if got := n.heldLeases(); strings.Join(got, " ") != strings.Join(held, " ") {
				t.Errorf("IPAM holds %v after the failed ADD, want %v", got, held)
			}
			wantOnlyLoopback(t, c)
		})
	}
}

// TestLoggingStdout: run directly, as a runtime does, the plugin prints only
// the CNI result (or error) JSON on stdout, whatever the log level; with a
// log file nothing goes to stderr either, and without one the failure goes
// to stderr.
func TestLoggingStdout(t *testing.T) {
	skipUnlessMaclanLogs(t)
	n := newNet(t)
	conf, logFile, _ := loggingConf(t, n, "debug")
	conf["cniVersion"] = "1.0.0"
	conf["name"] = n.name
	stdin := mustJSON(t, conf)
	c := newContainer(t)
	t.Cleanup(func() {
		if _, _, err := callDirect(t, n, "DEL", stdin, c); err != nil {
			t.Logf("cleanup DEL: %v", err)
		}
	})
	log := &logTail{t: t, path: logFile}

	stdout, stderr, err := callDirect(t, n, "ADD", stdin, c)
	if err != nil {
		t.Fatalf("ADD: %v (stdout %q, stderr %q)", err, stdout, stderr)
	}
	var res current.Result
	decodeOnly(t, "ADD stdout", stdout, &res)
	if res.CNIVersion != "1.0.0" || len(res.IPs) != 2 || len(res.Interfaces) != 1 {
		t.Errorf("ADD stdout %s: want a 1.0.0 result with 2 addresses and 1 interface", stdout)
	}
	if len(stderr) != 0 {
		t.Errorf("ADD with a logFile wrote to stderr: %q", stderr)
	}
	lines := log.next()
	for _, plugin := range []string{"maclan", "maclan-ipam"} {
		wantLogLine(t, lines, "direct ADD by "+plugin, map[string]string{"plugin": plugin, "cmd": "ADD", "msg": "ok"})
	}

	stdout, stderr, err = callDirect(t, n, "DEL", stdin, c)
	if err != nil || len(stdout) != 0 || len(stderr) != 0 {
		t.Errorf("DEL: error %v, stdout %q, stderr %q; want success and no output", err, stdout, stderr)
	}
	wantLogLine(t, log.next(), "direct DEL", map[string]string{"plugin": "maclan", "cmd": "DEL", "msg": "ok"})

	// No log file, a master that does not exist: stdout holds the CNI error,
	// stderr the error line.
	delete(conf, "logFile")
	delete(conf, "logLevel")
	conf["master"] = "nosuch0"
	bad := mustJSON(t, conf)
	c2 := newContainer(t)
	t.Cleanup(func() {
		if _, _, err := callDirect(t, n, "DEL", bad, c2); err != nil {
			t.Logf("cleanup DEL: %v", err)
		}
	})
	stdout, stderr, err = callDirect(t, n, "ADD", bad, c2)
	if err == nil {
		t.Fatalf("ADD with master nosuch0 succeeded: %s", stdout)
	}
	var cniErr types.Error
	decodeOnly(t, "failed ADD stdout", stdout, &cniErr)
	if cniErr.Code != types.ErrInvalidNetworkConfig || !strings.Contains(cniErr.Msg, "nosuch0") {
		t.Errorf("failed ADD stdout %s: want code %d naming nosuch0", stdout, types.ErrInvalidNetworkConfig)
	}
	var errLines []map[string]string
	for _, line := range strings.Split(strings.TrimSpace(string(stderr)), "\n") {
		if l, err := parseLogfmt(line); err == nil {
			errLines = append(errLines, l)
		} else {
			t.Errorf("stderr line %q: %v", line, err)
		}
	}
	wantLogLine(t, errLines, "failed ADD on stderr", map[string]string{
		"plugin": "maclan", "cmd": "ADD", "level": "ERROR", "msg": "failed", "container": c2.name,
	})
	for _, l := range errLines {
		if l["level"] == "INFO" || l["level"] == "DEBUG" {
			t.Errorf("stderr holds a line below warn without a logFile: %v", l)
		}
	}
	n.wantNoLeases()
}

// logTail reads the lines appended to a log file since the last call and
// checks that what was there before is unchanged (appended, not rewritten).
type logTail struct {
	t    *testing.T
	path string
	seen []byte
}

func (l *logTail) next() []map[string]string {
	l.t.Helper()
	b, err := os.ReadFile(l.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		l.t.Fatal(err)
	}
	if !bytes.HasPrefix(b, l.seen) {
		l.t.Fatalf("log %s was rewritten, not appended to:\nbefore %q\nnow %q", l.path, l.seen, b)
	}
	added := b[len(l.seen):]
	l.seen = b
	if len(added) > 0 && added[len(added)-1] != '\n' {
		l.t.Errorf("log %s ends in a partial line: %q", l.path, added)
	}
	var lines []map[string]string
	for _, line := range strings.Split(strings.TrimSuffix(string(added), "\n"), "\n") {
		if line == "" {
			continue
		}
		m, err := parseLogfmt(line)
		if err != nil {
			l.t.Errorf("log line %q: %v", line, err)
			continue
		}
		if _, err := time.Parse(time.RFC3339Nano, m["time"]); err != nil {
			l.t.Errorf("log line %q: time: %v", line, err)
		}
		lines = append(lines, m)
	}
	return lines
}

// parseLogfmt parses one line of log/slog's text handler: key=value pairs
// separated by a space, a value Go-quoted when it needs to be.
func parseLogfmt(line string) (map[string]string, error) {
	m := map[string]string{}
	s := line
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || strings.ContainsAny(s[:eq], " \"") {
			return nil, fmt.Errorf("no key=value at %q", s)
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, fmt.Errorf("value of %s: %w", key, err)
			}
			if val, err = strconv.Unquote(q); err != nil {
				return nil, fmt.Errorf("value of %s: %w", key, err)
			}
			s = s[len(q):]
		} else {
			if i := strings.IndexByte(s, ' '); i >= 0 {
				val, s = s[:i], s[i:]
			} else {
				val, s = s, ""
			}
		}
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("key %s twice", key)
		}
		m[key] = val
		switch {
		case s == "":
		case s[0] == ' ' && len(s) > 1:
			s = s[1:]
		default:
			return nil, fmt.Errorf("after %s=%q: %q", key, val, s)
		}
	}
	for _, k := range []string{"time", "level", "msg"} {
		if _, ok := m[k]; !ok {
			return nil, fmt.Errorf("no %s", k)
		}
	}
	return m, nil
}

// wantLogLine returns the first line that has every key=value of want, or
// fails t.
func wantLogLine(t *testing.T, lines []map[string]string, what string, want map[string]string) map[string]string {
	t.Helper()
next:
	for _, l := range lines {
		for k, v := range want {
			if l[k] != v {
				continue next
			}
		}
		return l
	}
	t.Errorf("%s: no log line with %v among %v", what, want, lines)
	return map[string]string{}
}

// wantLogDuration checks that the line carries a duration.
func wantLogDuration(t *testing.T, l map[string]string) {
	t.Helper()
	d, err := time.ParseDuration(l["duration"])
	if err != nil || d < 0 {
		t.Errorf("log line %v: duration %q: %v", l, l["duration"], err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeOnly decodes b into v and fails t unless b is that one JSON value
// with no unknown field and nothing after it.
func decodeOnly(t *testing.T, what string, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s %q: %v", what, b, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		t.Errorf("%s %q: more than the JSON value (%v)", what, b, err)
	}
}

// callDirect runs the main plugin binary as a runtime does, from the lab
// host (the rawCall helper of reliability_helpers_test.go), and returns its stdout
// and stderr apart: libcni's invoke would parse the one and pass on the
// other.
func callDirect(t *testing.T, n *testNet, command string, stdin []byte, ctr *netNS) (stdout, stderr []byte, err error) {
	t.Helper()
	rc := n.rawCall(pluginType, command, ctr.name, ctr, "eth0", stdin)
	err = rc.run()
	return rc.stdout.Bytes(), rc.stderr.Bytes(), err
}
