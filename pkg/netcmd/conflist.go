package netcmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ipam/iprange"
)

// The configuration list "maclan network create" writes. cniVersion 1.0.0
// is what containerd 1.6 and podman 4 (libcni 1.1) understand; cniVersions
// lets newer runtimes use 1.1.0 (STATUS, GC), as conflist-examples/10 does.
type conflistFile struct {
	CNIVersion  string   `json:"cniVersion"`
	CNIVersions []string `json:"cniVersions"`
	Name        string   `json:"name"`
	// AuxAddresses keeps the names of Docker's --aux-address; the IPAM
	// only needs the addresses (ipam.exclude). Runtimes ignore the key
	// (libcni reads only the keys of the CNI specification).
	AuxAddresses map[string]string `json:"auxAddresses,omitempty"`
	Plugins      []pluginConf      `json:"plugins"`
}

type pluginConf struct {
	Type              string           `json:"type"`
	Master            string           `json:"master,omitempty"`
	Mode              string           `json:"mode"`
	MTU               int              `json:"mtu,omitempty"`
	HostShim          *config.HostShim `json:"hostShim,omitempty"`
	ConflictDetection bool             `json:"conflictDetection,omitempty"`
	MACFromIP         bool             `json:"macFromIP,omitempty"`
	// The capabilities through which runtimes pass a container's fixed
	// address and MAC (CONVENTIONS.md: "ips", "mac").
	Capabilities map[string]bool `json:"capabilities"`
	IPAM         ipamConf        `json:"ipam"`
}

type ipamConf struct {
	Type    string              `json:"type"`
	Ranges  []iprange.RangeSet  `json:"ranges"`
	Routes  []map[string]string `json:"routes"`
	Exclude []string            `json:"exclude,omitempty"`
	DataDir string              `json:"dataDir,omitempty"`
	Store   *storeConf          `json:"store,omitempty"`
}

type storeConf struct {
	Type      string   `json:"type"`
	Endpoints []string `json:"endpoints"`
	Prefix    string   `json:"prefix,omitempty"`
}

// conflist builds the configuration list of req. IPv4 subnets form one
// range set and IPv6 subnets another, so that a container gets one address
// per family, from the first subnet with room, as from Docker's pools.
func (r *createReq) conflist() conflistFile {
	var v4, v6 iprange.RangeSet
	var exclude []string
	for _, s := range r.subnets {
		rg := iprange.Range{Subnet: s.subnet, Gateway: s.gateway}
		if s.ipRange.IsValid() {
			rg.RangeStart, rg.RangeEnd = clampRange(s.ipRange, s.subnet)
		}
		if s.subnet.Addr().Is4() {
			v4 = append(v4, rg)
		} else {
			v6 = append(v6, rg)
		}
		for _, a := range s.aux {
			exclude = append(exclude, a.String())
		}
	}
	ipam := ipamConf{Type: "maclan-ipam", Exclude: exclude, DataDir: r.dataDir}
	// Docker gives a macvlan container a default route through the gateway.
	if len(v4) > 0 {
		ipam.Ranges = append(ipam.Ranges, v4)
		ipam.Routes = append(ipam.Routes, map[string]string{"dst": "0.0.0.0/0"})
	}
	if len(v6) > 0 {
		ipam.Ranges = append(ipam.Ranges, v6)
		ipam.Routes = append(ipam.Routes, map[string]string{"dst": "::/0"})
	}
	if r.storeType == "etcd" {
		ipam.Store = &storeConf{Type: "etcd", Endpoints: r.endpoints, Prefix: r.prefix}
	}
	plugin := pluginConf{
		Type: "maclan", Master: r.parent, Mode: r.mode, MTU: r.mtu,
		ConflictDetection: r.conflict, MACFromIP: r.macFromIP,
		Capabilities: map[string]bool{"ips": true, "mac": true},
		IPAM:         ipam,
	}
	if r.shim {
		plugin.HostShim = &config.HostShim{Enabled: true, Address: r.shimAddr}
	}
	c := conflistFile{CNIVersion: "1.0.0", CNIVersions: []string{"1.0.0", "1.1.0"}, Name: r.name, Plugins: []pluginConf{plugin}}
	if len(r.aux) > 0 {
		c.AuxAddresses = map[string]string{}
		for _, a := range r.aux {
			c.AuxAddresses[a.name] = a.ip.String()
		}
	}
	return c
}

// encode renders the list and checks it with the parsers the plugins use,
// as a runtime would hand it to them (libcni adds name and cniVersion to
// each plugin's configuration).
func (c conflistFile) encode() ([]byte, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	nw, err := parseNetwork(b, "")
	if err != nil {
		return nil, err
	}
	if nw.err != nil {
		return nil, fmt.Errorf("the configuration would be refused by the plugins: %w", nw.err)
	}
	return append(b, '\n'), nil
}

// writeNetwork writes NAME.conflist into dir, after checking that no
// network of that name exists there and that no maclan network on the same
// parent has an overlapping subnet. It returns the file's path.
func writeNetwork(dir string, req createReq) (string, error) {
	b, err := req.conflist().encode()
	if err != nil {
		return "", err
	}
	nets, err := loadNetworks(dir)
	if err != nil {
		return "", err
	}
	if err := checkClashes(req, nets); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("configuration directory: %w", err)
	}
	path := filepath.Join(dir, req.name+".conflist")
	return path, writeNew(path, b)
}

// checkClashes refuses a name in use and a subnet that overlaps one of a
// maclan network on the same parent (two networks handing out the same
// addresses on one LAN).
func checkClashes(req createReq, nets []network) error {
	for _, n := range nets {
		if n.name == req.name {
			return fmt.Errorf("network with name %s already exists (%s)", req.name, n.file)
		}
	}
	for _, n := range nets {
		if !n.isMaclan() || n.parent() != req.parent {
			continue
		}
		for _, s := range req.subnets {
			for _, o := range n.subnets() {
				if s.subnet.Overlaps(o) {
					return fmt.Errorf("--subnet %s overlaps subnet %s of network %s on the same parent %s", s.subnet, o, n.name, parentName(req.parent))
				}
			}
		}
	}
	return nil
}

// parentName names a parent for messages; empty is the default route's.
func parentName(p string) string {
	if p == "" {
		return "(default route)"
	}
	return p
}

// writeNew writes path, failing if it exists: the data go to a temporary
// file that is then hard-linked to path (link(2) fails with EEXIST), so a
// runtime never reads a half-written file and a concurrent create of the
// same name loses cleanly.
func writeNew(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".maclan-create-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // the link, if any, keeps the data
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close() // the write error is the one to report
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		_ = tmp.Close() // the chmod error is the one to report
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("network file %s already exists", path)
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// subnets are the subnets of the network's IPAM ranges.
func (n network) subnets() []netip.Prefix {
	if n.ipam == nil {
		return nil
	}
	var ps []netip.Prefix
	for _, set := range n.ipam.Ranges {
		for _, r := range set {
			ps = append(ps, r.Subnet)
		}
	}
	return ps
}
