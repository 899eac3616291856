package etcd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// recordVersion is the format of lease records; a reader refuses others.
const recordVersion = 1

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
}

func encodeLease(l store.Lease) []byte {
	b, _ := json.Marshal(&leaseRecord{ // plain strings and a time: cannot fail
		Version: recordVersion, IP: l.IP.String(), ContainerID: l.ContainerID,
		IfName: l.IfName, Created: l.Created.UTC(), Conflict: l.Conflict,
	})
	return b
}

// decodeLease decodes the record stored under the key of ip. It accepts
// exactly what encodeLease writes: no unknown fields, no trailing data,
// valid names and the key's own address.
func decodeLease(ip netip.Addr, data []byte) (store.Lease, error) {
	var r leaseRecord
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(&r)
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errors.New("trailing data after the record")
		}
	}
	if err != nil {
		return store.Lease{}, fmt.Errorf("lease %s: %w: %w", ip, store.ErrCorrupt, err)
	}
	if r.Version != recordVersion {
		return store.Lease{}, fmt.Errorf("lease %s: version %d, want %d: %w", ip, r.Version, recordVersion, store.ErrCorrupt)
	}
	if got, err := netip.ParseAddr(r.IP); err != nil || got != ip {
		return store.Lease{}, fmt.Errorf("lease %s: records address %q: %w", ip, r.IP, store.ErrCorrupt)
	}
	if err := store.ValidateAttachment(r.ContainerID, r.IfName); err != nil {
		return store.Lease{}, fmt.Errorf("lease %s: %w: %w", ip, store.ErrCorrupt, err)
	}
	return store.Lease{IP: ip, ContainerID: r.ContainerID, IfName: r.IfName, Created: r.Created, Conflict: r.Conflict}, nil
}
