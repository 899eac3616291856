//go:build integration

package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// TestMultusExample does with the shipped Kubernetes objects what Multus
// does: the network's configuration is the NetworkAttachmentDefinition's
// spec.config, and the pod's network selection (annotation
// k8s.v1.cni.cncf.io/networks) becomes the runtimeConfig of the capabilities
// that configuration declares: "ips" and "mac".
func TestMultusExample(t *testing.T) {
	nad := readExample(t, "multus-nad.yaml")
	pod := readExample(t, "multus-pod.yaml")
	if got := yamlValue(t, nad, "kind"); got != "NetworkAttachmentDefinition" {
		t.Fatalf("multus-nad.yaml kind %q, want NetworkAttachmentDefinition", got)
	}
	nadName := yamlValue(t, nad, "metadata", "name")

	var selections []struct {
		Name      string   `json:"name"`
		Interface string   `json:"interface"`
		IPs       []string `json:"ips"`
		MAC       string   `json:"mac"`
	}
	annotation := yamlValue(t, pod, "metadata", "annotations", "k8s.v1.cni.cncf.io/networks")
	if err := json.Unmarshal([]byte(annotation), &selections); err != nil {
		t.Fatalf("multus-pod.yaml annotation %q: %v", annotation, err)
	}
	if len(selections) != 1 || selections[0].Name != nadName || len(selections[0].IPs) != 1 || selections[0].MAC == "" {
		t.Fatalf("multus-pod.yaml selects %+v, want one selection of %q with one IP and a MAC", selections, nadName)
	}
	sel := selections[0]

	n := newNet(t)
	list, err := libcni.NetworkConfFromBytes(n.adaptExample("multus-nad.yaml spec.config", []byte(yamlValue(t, nad, "spec", "config"))))
	if err != nil {
		t.Fatalf("multus-nad.yaml spec.config: %v", err)
	}
	caps := list.Plugins[0].Network.Capabilities
	if !caps["ips"] || !caps["mac"] {
		t.Fatalf("spec.config capabilities %v, want ips and mac (else Multus passes neither)", caps)
	}

	c := newContainer(t)
	a := n.attach(list, c, sel.Interface).withCaps(map[string]any{"ips": sel.IPs, "mac": sel.MAC})
	res := a.mustAdd()
	if v4, _ := resultIPs(t, res); v4 != sel.IPs[0] {
		t.Errorf("ADD result IPv4 %q, want the requested %s", v4, sel.IPs[0])
	}
	wantResultInterface(t, res, c, sel.Interface, sel.MAC)
	l := c.macvlan(t, sel.Interface)
	if got := l.Attrs().HardwareAddr.String(); got != sel.MAC {
		t.Errorf("%s MAC %s, want the requested %s", sel.Interface, got, sel.MAC)
	}
	if _, ok := c.findAddr(t, l, sel.IPs[0]); !ok {
		t.Errorf("%s lacks the requested %s", sel.Interface, sel.IPs[0])
	}
	wantPing(t, c, gw4)
	waitGwNeighbour(t, bareIP(sel.IPs[0]), sel.MAC)
	if got := n.heldLeases(); len(got) != 1 || got[0] != bareIP(sel.IPs[0]) {
		t.Errorf("IPAM holds %v, want [%s]", got, bareIP(sel.IPs[0]))
	}
	if err := a.check(); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	for i := 1; i <= 2; i++ {
		if err := a.del(); err != nil {
			t.Errorf("DEL #%d: %v", i, err)
		}
	}
	wantOnlyLoopback(t, c)
	n.wantNoLeases()
}

// readExample returns the text of conflist-examples/name.
func readExample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../conflist-examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// yamlValue returns the scalar at path in doc. It reads only the YAML of the
// shipped examples, which keeps the module free of a YAML dependency: maps
// nested by indentation, comments, and scalars that are plain, quoted or a
// literal block ("|"). Anything else fails the test.
func yamlValue(t *testing.T, doc string, path ...string) string {
	t.Helper()
	lines := strings.Split(doc, "\n")
	start, parent := 0, -1 // the block to search: lines from start indented deeper than parent
	for depth, key := range path {
		child, at := -1, -1
		for i := start; i < len(lines); i++ {
			text := strings.TrimLeft(lines[i], " ")
			if text == "" || strings.HasPrefix(text, "#") {
				continue
			}
			indent := len(lines[i]) - len(text)
			if indent <= parent {
				break // the block ends
			}
			if child < 0 {
				child = indent
			}
			if indent == child && strings.HasPrefix(text, key+":") {
				at = i
				break
			}
		}
		if at < 0 {
			t.Fatalf("yaml: no key %q", strings.Join(path[:depth+1], "."))
		}
		text := strings.TrimLeft(lines[at], " ")
		indent := len(lines[at]) - len(text)
		value := strings.TrimSpace(strings.TrimPrefix(text, key+":"))
		if depth < len(path)-1 {
			if value != "" {
				t.Fatalf("yaml: %q is a scalar, not a map", key)
			}
			start, parent = at+1, indent
			continue
		}
		switch {
		case value == "|":
			return literalBlock(lines[at+1:], indent)
		case strings.HasPrefix(value, "'") && strings.HasSuffix(value, "'") && len(value) > 1:
			return strings.ReplaceAll(value[1:len(value)-1], "''", "'")
		case strings.HasPrefix(value, `"`):
			s, err := strconv.Unquote(value)
			if err != nil {
				t.Fatalf("yaml: %s: %v", key, err)
			}
			return s
		case value == "" || strings.ContainsAny(value[:1], "[{&*!>"):
			t.Fatalf("yaml: %s: %q is beyond this reader", key, value)
		}
		return value
	}
	return ""
}

// literalBlock returns the lines of a "|" block scalar, those indented
// deeper than its key, with the block's indentation removed.
func literalBlock(lines []string, keyIndent int) string {
	var out []string
	strip := -1
	for _, line := range lines {
		text := strings.TrimLeft(line, " ")
		indent := len(line) - len(text)
		if text != "" && indent <= keyIndent {
			break
		}
		if text != "" && strip < 0 {
			strip = indent
		}
		if len(line) >= strip && strip >= 0 {
			line = line[strip:]
		}
		out = append(out, line)
	}
	return strings.TrimRight(strings.Join(out, "\n"), "\n") + "\n"
}
