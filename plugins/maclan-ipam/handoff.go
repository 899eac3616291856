package ipamplugin

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The etcd client (grpc, protobuf, zap) would make maclan-ipam four times
// larger and add some 25 ms of start-up to every call, on every store: most
// of an ADD (docs/benchmarks.md). So the default build leaves it out and
// hands every call that names the etcd store to maclan-ipam-etcd, the same
// program built with -tags etcd, installed beside it. The hand-off is an
// exec(2): same process, same environment, same standard input.

const etcdBinary = "maclan-ipam-etcd"

var errNoEtcd = fmt.Errorf("the etcd store needs %s installed beside maclan-ipam (make install puts it there)", etcdBinary)

// execEtcd replaces this process with maclan-ipam-etcd. It returns only on
// failure.
func execEtcd(args []string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("%w: %w", errNoEtcd, err)
	}
	path := filepath.Join(filepath.Dir(self), etcdBinary)
	err = syscall.Exec(path, append([]string{path}, args...), os.Environ())
	return fmt.Errorf("%w: exec %s: %w", errNoEtcd, path, err)
}

// handOffPlugin is called before skel reads the configuration: it reads
// stdin, and if the configuration names the etcd store, execs
// maclan-ipam-etcd with stdin replaced by a memory file holding the same
// bytes. Otherwise it puts the bytes back as os.Stdin for skel.
func handOffPlugin() error {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	fd, err := unix.MemfdCreate("stdin", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("memfd for stdin: %w", err)
	}
	f := os.NewFile(uintptr(fd), "stdin")
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("memfd for stdin: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("memfd for stdin: %w", err)
	}
	os.Stdin = f // for skel, here or if the exec below fails
	if !wantsEtcd(data) {
		return nil
	}
	// dup3 without O_CLOEXEC: the new program reads it as its stdin.
	if err := unix.Dup3(fd, 0, 0); err != nil {
		return fmt.Errorf("stdin for %s: %w", etcdBinary, err)
	}
	return execEtcd(os.Args[1:])
}

// wantsEtcd reports whether a network configuration names the etcd store.
// A configuration that does not decode is left to the plugin to report.
func wantsEtcd(stdin []byte) bool {
	var c struct {
		IPAM struct {
			Store struct {
				Type string `json:"type"`
			} `json:"store"`
		} `json:"ipam"`
	}
	return json.Unmarshal(stdin, &c) == nil && c.IPAM.Store.Type == "etcd"
}

// cliWantsEtcd reports whether an operator command acts on the etcd store.
func cliWantsEtcd(args []string) bool {
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && (name == "etcd-endpoints" || name == "to") {
			return true
		}
	}
	return false
}
