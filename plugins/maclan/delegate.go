package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/containernetworking/cni/pkg/version"
)

// delegate runs the IPAM plugin the way libcni's invoke.Delegate* do: the
// plugin is looked up in CNI_PATH, runs with this process's environment and
// CNI_COMMAND set to command, reads the configuration on stdin, and its
// stdout is the result or a CNI error; a "text file busy" exec (the binary
// being replaced) is retried. It stands in for package invoke because that
// one links OpenTelemetry and net/http for trace propagation, which made
// every maclan process start about 3 ms slower (docs/benchmarks.md).
//
// env holds "KEY=value" entries that replace those of this process (the
// host shim's IPAM calls name an attachment of their own).
func delegate(ctx context.Context, command, plugin string, stdin []byte, env ...string) ([]byte, error) {
	d, err := startDelegate(ctx, command, plugin, stdin, env...)
	if err != nil {
		return nil, err
	}
	return d.wait()
}

// delegation is a delegated plugin call under way: a child process, or
// maclan-ipam running in this process (inProcess).
type delegation struct {
	ctx            context.Context
	path           string
	env            []string
	stdin          []byte
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	tries          int

	done chan struct{} // in process: closed when the call has returned
	err  error         // in process: the call's error
}

// startDelegate starts the call and returns at once, so that the caller
// can do its own netlink work while the IPAM runs (an in-process call other
// than DEL has already run to its end: startInProcess says why). The child
// is forked from the calling thread, and an in-process call runs on it, so
// that thread must be in the namespace the IPAM expects (the runtime's):
// callers start it before they enter any other.
func startDelegate(ctx context.Context, command, plugin string, stdin []byte, env ...string) (*delegation, error) {
	path, err := findInPath(plugin, filepath.SplitList(os.Getenv("CNI_PATH")))
	if err != nil {
		return nil, err
	}
	if len(env) == 0 && runsInProcess(plugin, path, stdin) {
		return startInProcess(command, stdin), nil
	}
	env = append(env, "CNI_COMMAND="+command)
	replaced := func(kv string) bool {
		return slices.ContainsFunc(env, func(o string) bool {
			k, _, _ := strings.Cut(o, "=")
			return strings.HasPrefix(kv, k+"=")
		})
	}
	d := &delegation{ctx: ctx, path: path, env: append(slices.DeleteFunc(os.Environ(), replaced), env...), stdin: stdin}
	if err := d.start(); err != nil {
		if err = d.restartIfBusy(err); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func (d *delegation) start() error {
	d.stdout.Reset()
	d.stderr.Reset()
	d.cmd = exec.CommandContext(d.ctx, d.path)
	d.cmd.Env, d.cmd.Stdin, d.cmd.Stdout, d.cmd.Stderr = d.env, bytes.NewReader(d.stdin), &d.stdout, &d.stderr
	return d.cmd.Start()
}

// wait returns the plugin's stdout, or its error.
func (d *delegation) wait() ([]byte, error) {
	if d.done != nil {
		<-d.done
		if d.err != nil {
			return nil, d.err
		}
		return d.stdout.Bytes(), nil
	}
	for {
		err := d.cmd.Wait()
		if err == nil {
			if d.stderr.Len() > 0 {
				_, _ = d.stderr.WriteTo(os.Stderr) // informational only, as invoke does
			}
			return d.stdout.Bytes(), nil
		}
		if err = d.restartIfBusy(err); err != nil {
			return nil, err
		}
	}
}

// restartIfBusy starts the plugin again after a "text file busy" exec (the
// binary is being replaced), up to five times, a second apart, as invoke
// does, and returns nil once a new try has started; otherwise it returns
// the plugin's error.
func (d *delegation) restartIfBusy(err error) error {
	for strings.Contains(err.Error(), "text file busy") && d.tries < 5 {
		d.tries++
		time.Sleep(time.Second)
		if err = d.start(); err == nil {
			return nil
		}
	}
	return pluginError(err, d.stdout.Bytes(), d.stderr.Bytes())
}

// findInPath is invoke.FindInPath for Linux.
func findInPath(plugin string, paths []string) (string, error) {
	switch {
	case plugin == "":
		return "", errors.New("no plugin name provided")
	case strings.ContainsRune(plugin, os.PathSeparator):
		return "", fmt.Errorf("invalid plugin name: %s", plugin)
	case len(paths) == 0:
		return "", errors.New("no paths provided")
	}
	for _, dir := range paths {
		p := filepath.Join(dir, plugin)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("failed to find plugin %q in path %s", plugin, paths)
}

// pluginError turns a failed run into the plugin's own CNI error when its
// stdout holds one, as invoke does.
func pluginError(err error, stdout, stderr []byte) error {
	e := &types.Error{}
	switch {
	case len(stdout) == 0 && len(stderr) == 0:
		e.Msg = fmt.Sprintf("netplugin failed with no error message: %v", err)
	case len(stdout) == 0:
		e.Msg = fmt.Sprintf("netplugin failed: %q: %v", string(stderr), err)
	default:
		if perr := json.Unmarshal(stdout, e); perr != nil {
			e.Msg = fmt.Sprintf("netplugin failed but error parsing its diagnostic message %q: %v", string(stdout), perr)
		}
	}
	return e
}

// result waits for an ADD and decodes its result; a result without a
// cniVersion is read in the configuration's version, as invoke does.
func (d *delegation) result() (types.Result, error) {
	out, err := d.wait()
	if err != nil {
		return nil, err
	}
	stdin := d.stdin
	var v struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, fmt.Errorf("failed to unmarshal raw result: %w", err)
	}
	if v.CNIVersion == "" {
		if v.CNIVersion, err = (&version.ConfigDecoder{}).Decode(stdin); err != nil {
			return nil, err
		}
		var raw map[string]any
		if err := json.Unmarshal(out, &raw); err != nil || raw == nil {
			raw = map[string]any{}
		}
		raw["cniVersion"] = v.CNIVersion
		if out, err = json.Marshal(raw); err != nil {
			return nil, fmt.Errorf("failed to remarshal fixed result: %w", err)
		}
	}
	return create.Create(v.CNIVersion, out)
}
