//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// maclan and maclan-ipam are one executable (make build links the names).
// When the maclan-ipam that CNI_PATH finds is the file maclan runs from,
// maclan runs the IPAM in process; any other maclan-ipam is exec'd. Nothing
// a user can observe may differ but time: the same calls, made both ways,
// give the same results, errors, store contents and IPAM log lines, byte
// for byte once times are taken out.

// traceExec is a guarded exec that records the plugins' stderr, where
// MACLAN_TRACE=1 says whether the IPAM ran in process.
type traceExec struct {
	*invoke.DefaultExec
	t      *testing.T
	stderr *strings.Builder
}

func (e *traceExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	if err := theLab.checkInHost(); err != nil {
		return nil, err
	}
	raw := &invoke.RawExec{Stderr: io.MultiWriter(e.stderr, testLogWriter{e.t})}
	return raw.ExecPlugin(ctx, pluginPath, stdin, append(environ, "MACLAN_TRACE=1"))
}

// equivalenceRun is what one way of running the sequence showed.
type equivalenceRun struct {
	results  []string // ADD results and errors, in call order
	store    []string // the store's records after the ADDs (ls -o json, times out)
	ipamLog  []string // maclan-ipam's log lines, times out
	inProc   int      // calls that said "ipam in process"
	leftover []string // leases after the DELs
}

var (
	timeField     = regexp.MustCompile(`\b(time|duration|created)=\S+`)
	jsonTimeField = regexp.MustCompile(`"(created)": "[^"]*"`)
)

func runEquivalence(t *testing.T, name string, ipamCopy bool, c1, c2 *netNS) equivalenceRun {
	t.Helper()
	n := newNet(t)
	n.name = name
	if ipamCopy {
		// Another file: a copy of maclan's executable named maclan-ipam,
		// earlier in CNI_PATH.
		dir := t.TempDir()
		b, err := os.ReadFile(filepath.Join(theLab.binDir, ipamType))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ipamType), b, 0o755); err != nil {
			t.Fatal(err)
		}
		n.extraDir = dir
	}
	var stderr strings.Builder
	n.cni = libcni.NewCNIConfigWithCacheDir(n.path(), t.TempDir(), &traceExec{
		DefaultExec: &invoke.DefaultExec{RawExec: &invoke.RawExec{}, PluginDecoder: version.PluginDecoder{}},
		t:           t, stderr: &stderr,
	})
	logFile := filepath.Join(t.TempDir(), "maclan.log")
	conf := n.mainConf()
	conf["logFile"], conf["logLevel"] = logFile, "debug"
	list := n.list("1.1.0", conf)

	var run equivalenceRun
	record := func(res types.Result, err error) {
		if err != nil {
			var e *types.Error
			if errors.As(err, &e) {
				run.results = append(run.results, fmt.Sprintf("error %d %s %s", e.Code, e.Msg, e.Details))
				return
			}
			run.results = append(run.results, "error "+err.Error())
			return
		}
		b, _ := json.Marshal(res)
		run.results = append(run.results, string(b))
	}
	// Fixed MACs: the kernel's random ones would differ between the runs.
	a1 := n.attach(list, c1, "eth0").withCaps(map[string]any{"mac": "02:00:5e:00:00:01"})
	a1.rt.ContainerID = "equiv-1"
	a2 := n.attach(list, c2, "eth0").withArgs([2]string{"IP", "198.51.100.150"}).withCaps(map[string]any{"mac": "02:00:5e:00:00:02"})
	a2.rt.ContainerID = "equiv-2"
	clash := n.attach(list, c1, "net1").withArgs([2]string{"IP", "198.51.100.150"})
	clash.rt.ContainerID = "equiv-1"
	record(a1.add())
	record(a2.add())
	record(clash.add()) // code 101: the requested address is equiv-2's
	if err := a1.check(); err != nil {
		run.results = append(run.results, "check: "+err.Error())
	}
	record(a1.add()) // a repeated ADD

	code, out, errOut := ipamCLI(t, "ls", "--data-dir", n.dataDir, "--network", n.name, "-o", "json")
	if code != 0 {
		t.Fatalf("ls: %d %s %s", code, out, errOut)
	}
	run.store = strings.Split(jsonTimeField.ReplaceAllString(out, `"$1": "T"`), "\n")
	for _, a := range []*attachment{a1, a2, clash} {
		if err := a.del(); err != nil {
			run.results = append(run.results, "del: "+err.Error())
		}
	}
	run.leftover = n.heldLeases()

	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if strings.Contains(line, "plugin=maclan-ipam") {
			run.ipamLog = append(run.ipamLog, timeField.ReplaceAllString(line, "$1=T"))
		}
	}
	run.inProc = strings.Count(stderr.String(), "maclan-trace ipam in process")
	return run
}

func TestInProcessIPAMEquivalence(t *testing.T) {
	if ipamType != "maclan-ipam" {
		t.Skip("maclan runs only maclan-ipam in process")
	}
	c1, c2 := newContainer(t), newContainer(t)
	name := fmt.Sprintf("%s-equiv", theLab.prefix)
	inproc := runEquivalence(t, name, false, c1, c2)
	execd := runEquivalence(t, name, true, c1, c2)

	if inproc.inProc == 0 {
		t.Errorf("with maclan-ipam the same file as maclan, no call ran the IPAM in process")
	}
	if execd.inProc != 0 {
		t.Errorf("with another maclan-ipam first in CNI_PATH, %d calls ran the IPAM in process", execd.inProc)
	}
	compare := func(what string, a, b []string) {
		if strings.Join(a, "\n") != strings.Join(b, "\n") {
			t.Errorf("%s differ:\nin process:\n%s\nexec'd:\n%s", what, strings.Join(a, "\n"), strings.Join(b, "\n"))
		}
	}
	compare("results", inproc.results, execd.results)
	compare("store contents", inproc.store, execd.store)
	compare("maclan-ipam log lines", inproc.ipamLog, execd.ipamLog)
	compare("leases left", inproc.leftover, execd.leftover)
	if len(inproc.ipamLog) < 6 {
		t.Errorf("only %d maclan-ipam log lines: %v", len(inproc.ipamLog), inproc.ipamLog)
	}
	if !strings.Contains(strings.Join(inproc.results, "\n"), "error 101") {
		t.Errorf("the clashing static request did not fail with code 101: %v", inproc.results)
	}
	t.Logf("results:\n%s\nIPAM log:\n%s", strings.Join(inproc.results, "\n"), strings.Join(inproc.ipamLog, "\n"))
}
