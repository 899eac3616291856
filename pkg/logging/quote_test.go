package logging

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// hostile are values a network's author or a runtime could hand the
// plugins, each trying to end the line or to forge a field.
var hostile = []string{
	"", " ", "a b", "x\nlevel=ERROR msg=forged", "x\r\ntime=0", "\x1b[2J\x1b]0;title\a", "k=v",
	`"`, `\`, `\"`, "tab\there", "nul\x00", "nel\u0085", "ls\u2028ps\u2029", "nbsp\u00a0", "bidi\u202e",
	"bad\xff\xfeutf8", "del\x7f", "/etc/ld.so.preload", "x:/tmp/evil.so", "$(touch /tmp/pwned)",
}

func TestHostileValuesStayInTheirField(t *testing.T) {
	for _, v := range hostile {
		checkLogLine(t, v, v, v, v, v)
	}
}

func FuzzLogLine(f *testing.F) {
	for _, v := range hostile {
		f.Add(v, v, "eth0", v, "bridge")
	}
	f.Fuzz(func(t *testing.T, network, container, ifname, errText, mode string) {
		if len(network)+len(container)+len(ifname)+len(errText)+len(mode) > 1<<12 {
			return
		}
		checkLogLine(t, network, container, ifname, errText, mode)
	})
}

// checkLogLine logs one line the way the plugins do (attributes from the
// runtime and the configuration, an error, the mode) and checks that it is
// one line of printable ASCII-or-printable-Unicode text without tabs or
// other control characters, made of exactly the fields logged, each value
// reading back to what was logged.
func checkLogLine(t *testing.T, network, container, ifname, errText, mode string) {
	t.Helper()
	var buf bytes.Buffer
	log, closeFn := New(Options{Stderr: &buf, Level: "debug"},
		"plugin", "maclan", "cmd", "ADD", "container", container, "network", network, "ifname", ifname)
	log.Error("failed", "error", fmt.Errorf("mode %s: %w", mode, errors.New(errText)), "mode", mode)
	closeFn()
	line, ok := strings.CutSuffix(buf.String(), "\n")
	if !ok || strings.ContainsRune(line, '\n') {
		t.Fatalf("got %q, want exactly one line", buf.String())
	}
	for _, r := range line {
		if r == utf8.RuneError || (r != ' ' && !unicode.IsGraphic(r)) || (r != ' ' && unicode.IsSpace(r)) {
			t.Fatalf("line %q holds %U raw", line, r)
		}
	}
	kvs, err := parseLine(line)
	if err != nil {
		t.Fatalf("line %q: %v", line, err)
	}
	want := [][2]string{
		{"level", "ERROR"}, {"msg", "failed"}, {"plugin", "maclan"}, {"cmd", "ADD"},
		{"container", container}, {"network", network}, {"ifname", ifname},
		{"error", "mode " + mode + ": " + errText}, {"mode", mode},
	}
	if len(kvs) != len(want)+1 || kvs[0][0] != "time" {
		t.Fatalf("line %q: got fields %q, want time and %q", line, kvs, want)
	}
	for i, w := range want {
		if kvs[i+1] != w {
			t.Fatalf("line %q: field %d is %q, want %q", line, i+1, kvs[i+1], w)
		}
	}
}

// parseLine reads key=value fields separated by single spaces; a value is
// a Go quoted string or a run of characters other than space, '=' and '"'.
func parseLine(line string) ([][2]string, error) {
	var kvs [][2]string
	for len(line) > 0 {
		key, rest, ok := strings.Cut(line, "=")
		if !ok || key == "" || strings.ContainsAny(key, ` "`) {
			return nil, fmt.Errorf("no key at %q", line)
		}
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return nil, fmt.Errorf("value of %s: %w", key, err)
			}
			if val, err = strconv.Unquote(q); err != nil {
				return nil, err
			}
			rest = rest[len(q):]
		} else {
			end := strings.IndexByte(rest, ' ')
			if end < 0 {
				end = len(rest)
			}
			val, rest = rest[:end], rest[end:]
			if strings.ContainsAny(val, `="`) {
				return nil, fmt.Errorf("bare value of %s holds '=' or '\"': %q", key, val)
			}
		}
		kvs = append(kvs, [2]string{key, val})
		if rest != "" && !strings.HasPrefix(rest, " ") {
			return nil, fmt.Errorf("no space after %s at %q", key, rest)
		}
		line = strings.TrimPrefix(rest, " ")
	}
	return kvs, nil
}
