package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"golang.org/x/sys/unix"

	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ipam/holder"
	"github.com/maclan-cni/maclan/pkg/shim"
)

// newShim returns the host shim of master. Its address is the configured
// one or, without one, leased from the network's IPAM as an attachment of
// the shim's own (shimAttachment); stdin is the network configuration the
// IPAM is given then (nil: the caller only verifies).
func newShim(h netlinksafe.Handle, conf *config.NetConf, master string, stdin []byte) (*shim.Shim, error) {
	dir, err := shim.StateDir(shim.DefaultStateDir)
	if err != nil {
		return nil, err
	}
	sh := &shim.Shim{H: h, Master: master, StateDir: dir, Timeout: shimLockTimeout, Release: releaseShimLease}
	if !conf.ShimFromIPAM() {
		addr, err := conf.ShimAddress()
		if err != nil {
			return nil, err
		}
		sh.Addresses = []netip.Addr{addr}
		return sh, nil
	}
	if stdin == nil {
		return sh, nil
	}
	ipamConf, err := shimIPAMConf(stdin)
	if err != nil {
		return nil, err
	}
	id, ifName := shimAttachment(master, shimHostTag(stdin))
	lease := shimLease{Plugin: conf.IPAM.Type, ContainerID: id, IfName: ifName, Conf: ipamConf}
	sh.Lease = func() ([]netip.Addr, []byte, error) {
		token, err := json.Marshal(lease)
		if err != nil {
			return nil, nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), ipamTimeout)
		defer cancel()
		d, err := startDelegate(ctx, "ADD", lease.Plugin, lease.Conf, lease.env()...)
		if err != nil {
			return nil, nil, fmt.Errorf("IPAM %q ADD for %s: %w", lease.Plugin, id, err)
		}
		res, err := ipamAdd(lease.Plugin, d)
		if err != nil {
			return nil, nil, err
		}
		var addrs []netip.Addr
		for _, ip := range resultIPs(res) {
			if !containsFamily(addrs, ip) {
				addrs = append(addrs, ip)
			}
		}
		return addrs, token, nil
	}
	return sh, nil
}

// shimLease is how the shim's addresses were leased, kept by package shim
// so that whichever network's container removes the shim gives them back
// to the IPAM that leased them.
type shimLease struct {
	Plugin      string          `json:"plugin"`
	ContainerID string          `json:"containerID"`
	IfName      string          `json:"ifName"`
	Conf        json.RawMessage `json:"conf"`
}

// env names the shim's attachment in place of the runtime's container ID,
// interface and CNI_ARGS (a static IP=, say, is the container's).
//
// The shim lives in the host namespace, not in the namespace of the
// container whose ADD made it: MACLAN_HOST_ATTACHMENT tells maclan-ipam not
// to record that namespace, so that the lease is never taken for one of a
// vanished namespace; the sweep after a reboot, when the shim has gone
// too, gives it back.
func (l shimLease) env() []string {
	return []string{"CNI_CONTAINERID=" + l.ContainerID, "CNI_IFNAME=" + l.IfName, "CNI_ARGS=MACLAN_HOST_ATTACHMENT=true"}
}

func releaseShimLease(token []byte) error {
	var l shimLease
	if err := json.Unmarshal(token, &l); err != nil {
		return fmt.Errorf("shim lease record: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ipamTimeout)
	defer cancel()
	if _, err := delegate(ctx, "DEL", l.Plugin, l.Conf, l.env()...); err != nil {
		return fmt.Errorf("IPAM %q DEL for %s: %w", l.Plugin, l.ContainerID, err)
	}
	return nil
}

func containsFamily(addrs []netip.Addr, ip netip.Addr) bool {
	for _, a := range addrs {
		if a.Is4() == ip.Is4() {
			return true
		}
	}
	return false
}

// shimAttachment is the attachment (container ID, interface) under which
// the IPAM leases the shim of master its addresses: "maclan-hostshim-" and
// the master's name (in hex if it has characters a container ID may not),
// and the shim's interface name. `maclan-ipam ls` shows it as such.
//
// On a store that hosts share (etcd), every host has a shim of its own on a
// master of the same name: hostTag (shimHostTag) tells their attachments
// apart, or one host's shim would be handed another's address.
func shimAttachment(master, hostTag string) (containerID, ifName string) {
	name := master
	for _, c := range []byte(master) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			name = "x" + hex.EncodeToString([]byte(master))
			break
		}
	}
	if hostTag != "" {
		name += "-h" + hostTag
	}
	return "maclan-hostshim-" + name, shim.Name(master)
}

// shimHostTag is "" for a network whose IPAM store is one host's (the
// directory store, or an IPAM other than maclan-ipam), and for an etcd
// store a hash of this host's identity (/etc/machine-id).
func shimHostTag(stdin []byte) string {
	var nc struct {
		IPAM struct {
			Type  string `json:"type"`
			Store struct {
				Type string `json:"type"`
			} `json:"store"`
		} `json:"ipam"`
	}
	if json.Unmarshal(stdin, &nc) != nil || nc.IPAM.Store.Type != "etcd" {
		return ""
	}
	id, err := holder.Current()
	if err != nil || id.Host == "" {
		return ""
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(id.Host)) // a hash.Hash never fails to write
	return fmt.Sprintf("%08x", h.Sum32())
}

// shimIPAMConf is the network configuration for the shim's own IPAM calls:
// the runtime's, less what belongs to the container (runtimeConfig with its
// static ips and MAC, args, prevResult).
func shimIPAMConf(stdin []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(stdin, &m); err != nil {
		return nil, fmt.Errorf("network configuration for the shim's IPAM: %w: %w", err, config.ErrInvalid)
	}
	delete(m, "runtimeConfig")
	delete(m, "args")
	delete(m, "prevResult")
	return json.Marshal(m)
}

// detachShim removes the container's routes from the host shim, and the
// shim with its last route, giving back its leased addresses through the
// shim's own record of the lease. The master is found from the shim's
// records too (the default-route master may have gone).
func detachShim(conf *config.NetConf, id string) error {
	if !conf.ShimFromIPAM() {
		if _, err := conf.ShimAddress(); err != nil {
			return nil // ADD refused this configuration: nothing was attached
		}
	}
	dir, err := shim.StateDir(shim.DefaultStateDir)
	if err != nil {
		return err
	}
	master, ok := shim.FindMaster(dir, id)
	if !ok {
		return nil // never attached, or already detached
	}
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink handle in host netns: %w", err)
	}
	defer h.Close()
	sh, err := newShim(h, conf, master, nil)
	if err != nil {
		return err
	}
	return sh.Detach(id)
}

// GC keys of the valid attachments: SPEC.md ("GC") names the first; libcni
// sends the second too, the name an earlier text of the spec used
// (containernetworking/cni#1101).
var gcKeys = []string{"cni.dev/valid-attachments", "cni.dev/attachments"}

// withShimAttachments adds the host shims' own attachments to the runtime's
// list of valid attachments, so that the IPAM's GC keeps the shims' leases:
// the runtime does not know them. Without a list the IPAM releases nothing
// and the configuration goes through unchanged.
func withShimAttachments(stdin []byte, conf *config.NetConf) ([]byte, error) {
	if !conf.ShimFromIPAM() {
		return stdin, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(stdin, &m); err != nil {
		return nil, fmt.Errorf("decode network configuration: %w: %w", err, config.ErrInvalid)
	}
	masters := map[string]bool{}
	if conf.Master != "" {
		masters[conf.Master] = true
	}
	if dir, err := shim.StateDir(shim.DefaultStateDir); err == nil {
		entries, _ := os.ReadDir(dir) // none yet: no shim to keep
		for _, e := range entries {
			if e.IsDir() {
				masters[e.Name()] = true
			}
		}
	}
	changed := false
	for _, key := range gcKeys {
		raw, ok := m[key]
		if !ok {
			continue
		}
		var list []map[string]any
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, fmt.Errorf("field %q: %w: %w", key, err, config.ErrInvalid)
		}
		for master := range masters {
			id, ifName := shimAttachment(master, shimHostTag(stdin))
			list = append(list, map[string]any{"containerID": id, "ifname": ifName})
		}
		b, err := json.Marshal(list)
		if err != nil {
			return nil, err
		}
		m[key], changed = b, true
	}
	if !changed {
		return stdin, nil
	}
	return json.Marshal(m)
}
