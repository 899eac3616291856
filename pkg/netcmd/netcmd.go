// Package netcmd is "maclan network": create, list, inspect and remove
// maclan networks with the commands and flags of Docker's macvlan driver.
//
// A maclan network is a CNI configuration list, NAME.conflist, in the
// runtime's configuration directory (podman, containerd, cnitool and the
// kubelet read the same files); its leases are in the store its IPAM
// configuration names. Nothing else is kept: there is no daemon, so what
// Docker's "network inspect" learns from its daemon, maclan reads from the
// lease store and from libcni's result cache.
package netcmd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Defaults of the commands' paths.
const (
	// DefaultConfDir is where CNI runtimes look for network configurations.
	DefaultConfDir = "/etc/cni/net.d"
	// DefaultCNICacheDir is libcni's default cache directory; results are
	// under its "results" directory.
	DefaultCNICacheDir = "/var/lib/cni"
	// DefaultPluginDir is where runtimes look for plugins.
	DefaultPluginDir = "/opt/cni/bin"
)

const usage = `usage: maclan network COMMAND [flags]

  create [flags] NAME   write NAME.conflist into the CNI configuration directory
      -d, --driver macvlan      (the only driver; "maclan" is accepted too)
      --subnet CIDR             repeat for dual stack (one IPv4, one IPv6)
      --gateway IP              default: the subnet's first address
      --ip-range CIDR           hand out addresses from this part of the subnet only
      --aux-address NAME=IP     never hand out IP (a router, a printer)
      -o, --opt parent=IF       the host interface (default: the default route's)
      -o, --opt macvlan_mode=bridge|private|vepa|passthru
      -o, --opt mtu=N
      --ipv6                    needed with an IPv6 --subnet, as in Docker
      --host-shim               let the host reach its containers
      --host-shim-address IP    the shim's address (default: leased from the network)
      --conflict-detection      probe each new IPv4 address on the LAN first
      --mac-from-ip             derive each container's MAC from its IPv4 address
      --store disk|etcd         where the leases are kept (default disk)
      --data-dir DIR            the disk store's directory (default /var/lib/cni/maclan)
      --etcd-endpoints URL,...  --etcd-prefix P
  ls [-o table|json]                    maclan networks and the leases they hold
  inspect NAME... [-o json|table]       configuration, and every container with its addresses
  rm [-f|--force] NAME...               refuses while containers hold leases, unless --force

  Every command takes --conf-dir DIR (default /etc/cni/net.d); ls, inspect and
  rm take --cni-cache-dir DIR (libcni's cache, default /var/lib/cni), where the
  containers' MACs and names are read.
`

// env is what a command reads and writes: the outputs and the places that
// the flags common to all commands point at.
type env struct {
	stdout, stderr io.Writer
	confDir        string
	cacheDir       string
	// ipamEtcd is the maclan-ipam-etcd executable that lists the leases of
	// an etcd store: maclan does not link the etcd client.
	ipamEtcd string
}

// commonFlags are taken by every command.
var commonFlags = []flagSpec{
	{names: []string{"conf-dir"}},
	{names: []string{"cni-cache-dir"}},
	{names: []string{"help", "h"}, isBool: true},
}

// Main runs "maclan network ARGS" and returns the exit status: 0 done, 1
// failed, 2 bad usage.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmds := map[string]func(*env, []string) error{
		"create": create, "ls": ls, "list": ls, "inspect": inspect, "rm": rm, "remove": rm,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "maclan network: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	e := &env{stdout: stdout, stderr: stderr, ipamEtcd: findIPAMEtcd()}
	err := cmd(e, args[1:])
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errHelp):
		fmt.Fprint(stdout, usage)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "maclan network %s: %v\nSee 'maclan network --help'.\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "maclan network %s: %v\n", args[0], err)
		return 1
	}
}

var errHelp = errors.New("help requested")

// parse parses a command's flags with the common ones and fills e.
func (e *env) parse(args []string, specs []flagSpec) (parsedArgs, error) {
	p, err := parseArgs(args, append(append([]flagSpec{}, commonFlags...), specs...))
	if err != nil {
		return p, err
	}
	if p.bool("help") {
		return p, errHelp
	}
	e.confDir, e.cacheDir = DefaultConfDir, DefaultCNICacheDir
	if p.has("conf-dir") {
		e.confDir = p.str("conf-dir")
	}
	if p.has("cni-cache-dir") {
		e.cacheDir = p.str("cni-cache-dir")
	}
	return p, nil
}

// findIPAMEtcd looks for maclan-ipam-etcd beside the running executable,
// then in the plugin directory.
func findIPAMEtcd() string {
	const name = "maclan-ipam-etcd"
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return filepath.Join(DefaultPluginDir, name)
}
