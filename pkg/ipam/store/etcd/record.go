package etcd

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// recordVersion is the format of lease records: 2 adds the lifecycle
// fields (host, boot, netns, workload, released) to version 1, which stays
// readable. A reader refuses any other version.
const recordVersion = 2

// leaseRecord is the value of lease/<addr>. etcd checksums its own data,
// so the record carries none; a hand-written value is caught by the strict
// decoder instead.
type leaseRecord struct {
	Version     int       `json:"v"`
	IP          string    `json:"ip"`
	ContainerID string    `json:"containerID"`
	IfName      string    `json:"ifName"`
	Created     time.Time `json:"created"`
	Conflict    string    `json:"conflict,omitempty"`
	Host        string    `json:"host,omitempty"`
	Boot        string    `json:"boot,omitempty"`
	Netns       string    `json:"netns,omitempty"`
	Workload    string    `json:"workload,omitempty"`
	WorkloadUID string    `json:"workloadUID,omitempty"`
	Released    time.Time `json:"released,omitzero"`
}

func encodeLease(l store.Lease) []byte {
	r := leaseRecord{
		Version: recordVersion, IP: l.IP.String(), ContainerID: l.ContainerID,
		IfName: l.IfName, Created: l.Created.UTC(), Conflict: l.Conflict,
		Host: l.Host, Boot: l.Boot, Netns: l.Netns, Workload: l.Workload, WorkloadUID: l.WorkloadUID,
	}
	if !l.Released.IsZero() {
		r.Released = l.Released.UTC()
	}
	b, _ := json.Marshal(&r) // plain strings and times: cannot fail
	return b
}

// decodeLease decodes the record stored under the key of ip. It accepts
// exactly what encodeLease writes, or a version 1 record: no unknown
// fields, no trailing data, valid names and the key's own address.
func decodeLease(ip netip.Addr, data []byte) (store.Lease, error) {
	var r leaseRecord
	if err := store.DecodeRecord(data, &r); err != nil {
		return store.Lease{}, fmt.Errorf("lease %s: %w: %w", ip, store.ErrCorrupt, err)
	}
	v1Extra := r.Host != "" || r.Boot != "" || r.Netns != "" || r.Workload != "" || r.WorkloadUID != "" || !r.Released.IsZero()
	if r.Version != recordVersion && (r.Version != 1 || v1Extra) {
		return store.Lease{}, fmt.Errorf("lease %s: version %d, want 1 or %d: %w", ip, r.Version, recordVersion, store.ErrCorrupt)
	}
	if got, err := netip.ParseAddr(r.IP); err != nil || got != ip {
		return store.Lease{}, fmt.Errorf("lease %s: records address %q: %w", ip, r.IP, store.ErrCorrupt)
	}
	if err := store.ValidateAttachment(r.ContainerID, r.IfName); err != nil {
		return store.Lease{}, fmt.Errorf("lease %s: %w: %w", ip, store.ErrCorrupt, err)
	}
	l := store.Lease{
		IP: ip, ContainerID: r.ContainerID, IfName: r.IfName, Created: r.Created, Conflict: r.Conflict,
		Host: r.Host, Boot: r.Boot, Netns: r.Netns, Workload: r.Workload, WorkloadUID: r.WorkloadUID, Released: r.Released,
	}
	if err := l.ValidateText(); err != nil {
		return store.Lease{}, fmt.Errorf("lease %s: %w: %w", ip, store.ErrCorrupt, err)
	}
	return l, nil
}
