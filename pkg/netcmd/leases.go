package netcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netns"

	"github.com/maclan-cni/maclan/pkg/ipam/ipamconf"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/disk"
)

// lease is one address the network's IPAM holds.
type lease struct {
	IP          netip.Addr
	ContainerID string
	IfName      string
	// Conflict is the MAC of a LAN device found using IP (conflict
	// detection): the record holds no container.
	Conflict string
	// Netns and Workload: where and for whom the lease was taken (empty in
	// leases written before leases recorded them).
	Netns    string
	Workload string
	// Sticky: a hold for a workload whose container has gone (stickyFor).
	Sticky bool
}

// inUse reports whether the lease is held by an attachment (a container
// or the host shim) rather than kept for a device found on the LAN or for
// a workload that may come back.
func (l lease) inUse() bool { return l.Conflict == "" && !l.Sticky }

// shimPrefix starts the container ID under which the host shim of a master
// holds its leases (plugins/maclan/hostshim.go, shimAttachment).
const shimPrefix = "maclan-hostshim-"

// etcdTimeout bounds one listing of an etcd store by maclan-ipam-etcd; a
// hang guard, the store's own timeouts are shorter.
const etcdTimeout = time.Minute

// leases reads the leases of n from the store its IPAM configuration
// names. ok is false when the IPAM is not maclan-ipam (dhcp, static, ...),
// whose leases maclan cannot see.
func (e *env) leases(n network) (ls []lease, ok bool, err error) {
	if n.ipam == nil {
		return nil, false, nil
	}
	if n.ipam.Store.Type == "etcd" {
		ls, err = e.etcdLeases(n.name, n.ipam)
		return ls, true, err
	}
	ls, err = diskLeases(n.ipam.Store.Dir, n.name)
	return ls, true, err
}

// diskLeases lists the directory store of network under dir, under its
// lock. A network that never had a lease has no store: no leases.
func diskLeases(dir, network string) ([]lease, error) {
	if _, err := os.Stat(filepath.Join(dir, network, "leases")); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	st, err := disk.New(dir, network, disk.Options{})
	if err != nil {
		return nil, err
	}
	defer func() { _ = st.Close() }() // read-only use: nothing to lose
	var got []store.Lease
	ctx := context.Background()
	err = store.WithLock(ctx, st, func() error {
		var lerr error
		got, lerr = st.List(ctx)
		return lerr
	})
	if err != nil && !errors.Is(err, store.ErrCorrupt) {
		return nil, fmt.Errorf("leases of %s: %w", network, err)
	}
	// Damaged records are left out; `maclan-ipam fsck` reports them.
	ls := make([]lease, 0, len(got))
	for _, l := range got {
		ls = append(ls, lease{IP: l.IP, ContainerID: l.ContainerID, IfName: l.IfName, Conflict: l.Conflict,
			Netns: l.Netns, Workload: l.Workload, Sticky: l.IsSticky()})
	}
	return ls, nil
}

// etcdLeases lists an etcd store through maclan-ipam-etcd, the build of
// maclan-ipam with the etcd client, which maclan does not link.
func (e *env) etcdLeases(network string, c *ipamconf.Conf) ([]lease, error) {
	args := []string{"ls", "-o", "json", "--network", network, "--data-dir", c.Store.Dir,
		"--etcd-endpoints", strings.Join(c.Store.Endpoints, ",")}
	if c.Store.Prefix != "" {
		args = append(args, "--etcd-prefix", c.Store.Prefix)
	}
	if t := c.Store.TLS; t != nil {
		args = append(args, "--etcd-ca", t.CA, "--etcd-cert", t.Cert, "--etcd-key", t.Key)
	}
	ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, e.ipamEtcd, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("list the etcd leases of %s with %s: %w: %s", network, e.ipamEtcd, err, strings.TrimSpace(stderr.String()))
	}
	var rows []struct {
		IP          string    `json:"ip"`
		ContainerID string    `json:"containerID"`
		IfName      string    `json:"ifName"`
		Conflict    string    `json:"conflict"`
		Netns       string    `json:"netns"`
		Workload    string    `json:"workload"`
		Released    time.Time `json:"released"`
	}
	if err := json.Unmarshal(out, &rows); err != nil {
		return nil, fmt.Errorf("decode the output of %s ls: %w", e.ipamEtcd, err)
	}
	ls := make([]lease, 0, len(rows))
	for _, r := range rows {
		ip, err := netip.ParseAddr(r.IP)
		if err != nil {
			return nil, fmt.Errorf("%s ls: address %q: %w", e.ipamEtcd, r.IP, err)
		}
		ls = append(ls, lease{IP: ip, ContainerID: r.ContainerID, IfName: r.IfName, Conflict: r.Conflict,
			Netns: r.Netns, Workload: r.Workload, Sticky: !r.Released.IsZero()})
	}
	return ls, nil
}

// attachment is the CNI identity of an interface.
type attachment struct{ containerID, ifName string }

// cached is what libcni's result cache tells of an attachment: the
// runtime's name for the workload and the interface's MAC.
type cached struct {
	name string
	mac  string
}

// cacheFile is the part of a libcni cache entry ("cniCacheV1", written by
// libcni's ADD under <cacheDir>/results) read here.
type cacheFile struct {
	Kind        string      `json:"kind"`
	ContainerID string      `json:"containerId"`
	IfName      string      `json:"ifName"`
	NetworkName string      `json:"networkName"`
	CNIArgs     [][2]string `json:"cniArgs"`
	Result      struct {
		Interfaces []struct {
			Name    string `json:"name"`
			MAC     string `json:"mac"`
			Sandbox string `json:"sandbox"`
		} `json:"interfaces"`
	} `json:"result"`
}

// readCache reads the libcni cache entries of network under cacheDir. The
// cache is the runtime's, not maclan's: entries that cannot be read are
// skipped, and a missing cache gives nothing.
func readCache(cacheDir, network string) map[attachment]cached {
	out := map[attachment]cached{}
	dir := filepath.Join(cacheDir, "results")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return out // no cache: names and MACs stay unknown
	}
	for _, en := range entries {
		if !strings.HasPrefix(en.Name(), network+"-") || !en.Type().IsRegular() {
			continue // libcni names entries <network>-<containerID>-<ifName>
		}
		b, err := os.ReadFile(filepath.Join(dir, en.Name()))
		if err != nil {
			continue // gone since ReadDir, or unreadable: unknown
		}
		var f cacheFile
		if json.Unmarshal(b, &f) != nil || f.Kind != "cniCacheV1" || f.NetworkName != network {
			continue
		}
		out[attachment{f.ContainerID, f.IfName}] = cached{name: workloadName(f.CNIArgs), mac: f.mac()}
	}
	return out
}

// mac is the MAC of the container's interface in the cached result: the
// interface of that name inside a sandbox.
func (f cacheFile) mac() string {
	for _, i := range f.Result.Interfaces {
		if i.Name == f.IfName && i.Sandbox != "" {
			return i.MAC
		}
	}
	return ""
}

// workloadName is the name the runtime passed in CNI_ARGS: podman and the
// kubelet set K8S_POD_NAME (the container's or pod's name), the kubelet
// also K8S_POD_NAMESPACE.
func workloadName(args [][2]string) string {
	var name, ns string
	for _, kv := range args {
		switch kv[0] {
		case "K8S_POD_NAME":
			name = kv[1]
		case "K8S_POD_NAMESPACE":
			ns = kv[1]
		}
	}
	if name != "" && ns != "" {
		return ns + "/" + name
	}
	return name
}

// liveMAC reads the MAC of the attachment's interface from its network
// namespace, through a netlink handle bound to it (the namespace is never
// entered). "" when the namespace or the link is gone.
func liveMAC(netnsPath, ifName string) string {
	if netnsPath == "" {
		return ""
	}
	nsh, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return ""
	}
	defer nsh.Close()
	h, err := netlinksafe.NewHandleAt(nsh)
	if err != nil {
		return ""
	}
	defer h.Close()
	link, err := h.LinkByName(ifName)
	if err != nil {
		return ""
	}
	return link.Attrs().HardwareAddr.String()
}
