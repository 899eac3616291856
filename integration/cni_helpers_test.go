//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// pluginType is the main plugin under test. MACLAN_TEST_PLUGIN=macvlan runs
// the suite against the reference plugin, which checks the lab and the
// tests themselves (tests of what maclan does better are expected to fail).
var pluginType = envOr("MACLAN_TEST_PLUGIN", "maclan")

// ipamType is the IPAM plugin every test delegates to: maclan-ipam, or the
// reference host-local with MACLAN_TEST_IPAM=host-local (heldLeases below
// knows the disk layout of both).
var ipamType = envOr("MACLAN_TEST_IPAM", "maclan-ipam")

// The IPAM hands out .100-.199 and ::100-::1ff; tests that ask for a fixed
// address (capability "ips") pick one from the top of the range.
const (
	rangeStart4 = "198.51.100.100"
	rangeEnd4   = "198.51.100.199"
	rangeStart6 = "2001:db8:100::100"
	rangeEnd6   = "2001:db8:100::1ff"
)

// pluginTimeout bounds one libcni or cnitool call; it is a hang guard, not a
// performance threshold.
const pluginTimeout = 2 * time.Minute

// testNet is one CNI network of a test: its name, its IPAM state directory,
// a libcni client with a private cache, and a NETCONFPATH for cnitool.
type testNet struct {
	t        *testing.T
	name     string
	dataDir  string // the IPAM's state
	netDir   string // NETCONFPATH for cnitool
	extraDir string // holds the spy IPAM, when there is one
	cni      *libcni.CNIConfig
}

func newNet(t *testing.T) *testNet {
	t.Helper()
	n := &testNet{
		t:       t,
		name:    fmt.Sprintf("%s-n%d", theLab.prefix, theLab.seq.Add(1)),
		dataDir: t.TempDir(),
		netDir:  t.TempDir(),
	}
	n.cni = n.newCNIConfig(t.TempDir())
	return n
}

// newCNIConfig makes a libcni client whose every plugin execution passes the
// safety guard, with its own result cache.
func (n *testNet) newCNIConfig(cacheDir string) *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir(n.path(), cacheDir, n.guardedExec())
}

func (n *testNet) guardedExec() *guardedExec {
	return &guardedExec{DefaultExec: &invoke.DefaultExec{
		RawExec:       &invoke.RawExec{Stderr: testLogWriter{n.t}},
		PluginDecoder: version.PluginDecoder{},
	}}
}

// path is CNI_PATH: the built binaries first, then the reference tools.
func (n *testNet) path() []string {
	p := []string{theLab.binDir, theLab.toolsDir}
	if n.extraDir != "" {
		p = append([]string{n.extraDir}, p...)
	}
	return p
}

// guardedExec refuses to start a plugin unless the calling thread is in the
// lab's host namespace.
type guardedExec struct {
	*invoke.DefaultExec
}

func (e *guardedExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	if err := theLab.checkInHost(); err != nil {
		return nil, err
	}
	return e.DefaultExec.ExecPlugin(ctx, pluginPath, stdin, environ)
}

// testLogWriter sends the plugins' stderr to the test log.
type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Logf("plugin stderr: %s", strings.TrimSpace(string(p)))
	return len(p), nil
}

// ipamConf is the IPAM section: a dual-stack range on the lab's LAN with
// default routes via the gateway.
func (n *testNet) ipamConf() map[string]any {
	return map[string]any{
		"type":    ipamType,
		"dataDir": n.dataDir,
		"ranges": []any{
			[]any{map[string]any{"subnet": subnet4, "rangeStart": rangeStart4, "rangeEnd": rangeEnd4, "gateway": gw4}},
			[]any{map[string]any{"subnet": subnet6, "rangeStart": rangeStart6, "rangeEnd": rangeEnd6, "gateway": gw6}},
		},
		"routes": []any{map[string]any{"dst": "0.0.0.0/0"}, map[string]any{"dst": "::/0"}},
	}
}

// mainConf is the main plugin's entry as a user writes it; tests change keys.
func (n *testNet) mainConf() map[string]any {
	return map[string]any{
		"type":         pluginType,
		"master":       masterIf,
		"mode":         "bridge",
		"ipam":         n.ipamConf(),
		"capabilities": map[string]any{"mac": true, "ips": true},
	}
}

// list builds a network configuration list of the given spec version.
func (n *testNet) list(cniVersion string, plugins ...map[string]any) *libcni.NetworkConfigList {
	n.t.Helper()
	b, err := json.Marshal(map[string]any{"cniVersion": cniVersion, "name": n.name, "plugins": plugins})
	if err != nil {
		n.t.Fatal(err)
	}
	l, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		n.t.Fatalf("parse conflist %s: %v", b, err)
	}
	return l
}

// attachment is one (container, interface) of a network list.
type attachment struct {
	net  *testNet
	list *libcni.NetworkConfigList
	ctr  *netNS
	rt   *libcni.RuntimeConf
	// cleanupSet records that a DEL is registered for the end of the test.
	cleanupSet bool
}

func (n *testNet) attach(list *libcni.NetworkConfigList, ctr *netNS, ifName string) *attachment {
	return &attachment{
		net:  n,
		list: list,
		ctr:  ctr,
		rt:   &libcni.RuntimeConf{ContainerID: ctr.name, NetNS: ctr.path, IfName: ifName},
	}
}

// withCaps sets the runtime's capability arguments (mac, ips, portMappings).
func (a *attachment) withCaps(caps map[string]any) *attachment {
	a.rt.CapabilityArgs = caps
	return a
}

func (a *attachment) withArgs(args ...[2]string) *attachment {
	a.rt.Args = args
	return a
}

// add runs ADD through libcni; a DEL is registered for the end of the test
// whatever the outcome, as a runtime would do after a failed ADD.
func (a *attachment) add() (types.Result, error) {
	a.net.t.Helper()
	a.ensureCleanup()
	var res types.Result
	err := theLab.inHost(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
		defer cancel()
		var err error
		res, err = a.net.cni.AddNetworkList(ctx, a.list, a.rt)
		return err
	})
	return res, err
}

// mustAdd runs ADD and returns the result in the current spec version.
func (a *attachment) mustAdd() *current.Result {
	t := a.net.t
	t.Helper()
	res, err := a.add()
	if err != nil {
		t.Fatalf("ADD %s in %s: %v", a.rt.IfName, a.ctr.name, err)
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatalf("convert ADD result: %v", err)
	}
	return cur
}

func (a *attachment) ensureCleanup() {
	if a.cleanupSet {
		return
	}
	a.cleanupSet = true
	t := a.net.t
	t.Cleanup(func() {
		if err := a.del(); err != nil {
			t.Logf("cleanup DEL %s in %s: %v", a.rt.IfName, a.ctr.name, err)
		}
	})
}

func (a *attachment) check() error {
	return theLab.inHost(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
		defer cancel()
		return a.net.cni.CheckNetworkList(ctx, a.list, a.rt)
	})
}

func (a *attachment) del() error {
	return theLab.inHost(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
		defer cancel()
		return a.net.cni.DelNetworkList(ctx, a.list, a.rt)
	})
}

// execRaw runs the main plugin binary directly, as a runtime that does not
// use libcni would, so that input libcni itself rejects (malformed JSON, an
// over-long interface name, a malformed CNI_ARGS) reaches the plugin.
func (n *testNet) execRaw(command string, stdin []byte, ctr *netNS, ifName, cniArgs string) error {
	n.t.Helper()
	_, err := n.execPlugin(&invoke.Args{
		Command:       command,
		ContainerID:   ctr.name,
		NetNS:         ctr.path,
		IfName:        ifName,
		PluginArgsStr: cniArgs,
	}, stdin)
	return err
}

// execPlugin runs the main plugin binary directly with args (CNI_PATH
// added), as a runtime without libcni does: Mesos, or a DEL without
// CNI_NETNS. ADD returns the result in stdin's spec version; other commands
// return none.
func (n *testNet) execPlugin(args *invoke.Args, stdin []byte) (types.Result, error) {
	n.t.Helper()
	exec := n.guardedExec()
	pluginPath, err := exec.FindInPath(pluginType, n.path())
	if err != nil {
		n.t.Fatal(err)
	}
	args.Path = strings.Join(n.path(), string(os.PathListSeparator))
	var res types.Result
	err = theLab.inHost(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
		defer cancel()
		if args.Command != "ADD" {
			return invoke.ExecPluginWithoutResult(ctx, pluginPath, stdin, args, exec)
		}
		var err error
		res, err = invoke.ExecPluginWithResult(ctx, pluginPath, stdin, args, exec)
		return err
	})
	return res, err
}

// cnitool runs the cnitool binary with NETCONFPATH holding list, from the
// lab host namespace. env adds CNI_IFNAME, CNI_ARGS, CAP_ARGS.
func (n *testNet) cnitool(list *libcni.NetworkConfigList, verb string, ctr *netNS, env ...string) (string, error) {
	n.t.Helper()
	file := filepath.Join(n.netDir, n.name+".conflist")
	if err := os.WriteFile(file, list.Bytes, 0o644); err != nil {
		n.t.Fatal(err)
	}
	var stdout, stderr strings.Builder
	err := theLab.inHost(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(theLab.toolsDir, "cnitool"), verb, n.name, ctr.path)
		cmd.Env = append(cleanEnv(),
			"NETCONFPATH="+n.netDir,
			"CNI_PATH="+strings.Join(n.path(), string(os.PathListSeparator)))
		cmd.Env = append(cmd.Env, env...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		return cmd.Run()
	})
	if err != nil {
		return stdout.String(), fmt.Errorf("cnitool %s %s: %w: %s", verb, ctr.name, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// cleanEnv is the test's environment without any CNI_ or cnitool variable.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "CNI_") || k == "NETCONFPATH" || k == "CAP_ARGS" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// cniCode returns the CNI error code carried by err, or 0 if none.
func cniCode(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// wantCNIError fails t unless err is a CNI error with the code wanted and a
// message that names every one of mentions.
func wantCNIError(t *testing.T, err error, code uint, mentions ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want CNI error %d", code)
	}
	if got := cniCode(err); got != code {
		t.Errorf("got error code %d (%v), want %d", got, err, code)
	}
	wantErrorMentions(t, err, mentions...)
}

// heldLeases lists the addresses the IPAM holds in the network, read from
// its disk layout: one file per address, named by the address, under
// <dataDir>/<network>/leases (maclan-ipam) or <dataDir>/<network>
// (host-local).
func (n *testNet) heldLeases() []string {
	n.t.Helper()
	dir := filepath.Join(n.dataDir, n.name)
	if ipamType == "maclan-ipam" {
		dir = filepath.Join(dir, "leases")
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		n.t.Fatal(err)
	}
	var ips []string
	for _, e := range entries {
		if ip, err := netip.ParseAddr(e.Name()); err == nil && e.Type().IsRegular() {
			ips = append(ips, ip.String())
		}
	}
	sort.Strings(ips)
	return ips
}

func (n *testNet) wantNoLeases() {
	n.t.Helper()
	if got := n.heldLeases(); len(got) != 0 {
		n.t.Errorf("IPAM still holds %v, want no lease", got)
	}
}

// spyIPAM installs an IPAM plugin "mlt-spy" that records the command and
// configuration of every call, then hands the call on to the real IPAM. It
// shows what the main plugin forwards (STATUS, GC) apart from what the IPAM
// does with it. Call it before any list is built.
func (n *testNet) spyIPAM() (typeName string, calls func() []spyCall) {
	n.t.Helper()
	dir := n.t.TempDir()
	logFile := filepath.Join(dir, "calls.log")
	real := ""
	for _, d := range []string{theLab.binDir, theLab.toolsDir} {
		if inDirs(ipamType, d) {
			real = filepath.Join(d, ipamType)
			break
		}
	}
	script := fmt.Sprintf(`#!/bin/sh
in=$(cat)
printf '%%s\t%%s\n' "$CNI_COMMAND" "$(printf '%%s' "$in" | tr -d '\n')" >>%q
printf '%%s' "$in" | exec %q
`, logFile, real)
	if err := os.WriteFile(filepath.Join(dir, "mlt-spy"), []byte(script), 0o755); err != nil {
		n.t.Fatal(err)
	}
	n.extraDir = dir
	n.cni = n.newCNIConfig(n.t.TempDir())
	return "mlt-spy", func() []spyCall {
		b, err := os.ReadFile(logFile)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			n.t.Fatal(err)
		}
		var calls []spyCall
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			cmd, conf, _ := strings.Cut(line, "\t")
			calls = append(calls, spyCall{command: cmd, conf: conf})
		}
		return calls
	}
}

type spyCall struct {
	command string
	conf    string // the JSON configuration the IPAM received
}

// macFor makes a distinct, locally administered unicast MAC.
func macFor(i int) string {
	return fmt.Sprintf("02:6d:6c:%02x:%02x:%02x", os.Getpid()&0xff, theLab.seq.Add(1)&0xff, i&0xff)
}

// wantErrorMentions fails t unless err names every one of mentions.
func wantErrorMentions(t *testing.T, err error, mentions ...string) {
	t.Helper()
	for _, m := range mentions {
		if err == nil || !strings.Contains(err.Error(), m) {
			t.Errorf("error %v does not name %q", err, m)
		}
	}
}
