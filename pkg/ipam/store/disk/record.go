package disk

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// recordVersion is the format of lease and attachment records. A reader
// refuses any other version rather than guess.
const recordVersion = 1

// castagnoli is the CRC-32C table (RFC 3720, appendix B.4: the
// Castagnoli polynomial, reflected), made on first use: maclan's
// executable links the store, and most of its calls never checksum a
// record. It is made here rather than by crc32.MakeTable, which also
// builds the tables of the SSE 4.2 path for long inputs: 0.2 ms in every
// process, for records of a few hundred bytes that the table alone sums
// in microseconds. Being another table than crc32's own, it makes
// crc32.Update take the table path; the sums are the same
// (TestCastagnoliTable).
var castagnoli = sync.OnceValue(func() *crc32.Table {
	var t crc32.Table
	for i := range t {
		c := uint32(i)
		for range 8 {
			if c&1 == 1 {
				c = c>>1 ^ crc32.Castagnoli
			} else {
				c >>= 1
			}
		}
		t[i] = c
	}
	return &t
})

// leaseVersion is the format of lease records: 2 adds the lifecycle fields
// (host, boot, netns, workload, released) to version 1, which stays
// readable; "fsck --repair" rewrites version 1 records as version 2.
const leaseVersion = 2

// leaseRecord is the JSON of leases/<ip>. The checksum covers every other
// field, so a record damaged after it was written (a bad sector, a hand
// edit) is detected instead of trusted.
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
	Sum         string    `json:"crc32c"`
}

func (r *leaseRecord) sum() string {
	h := crc32.New(castagnoli())
	_, _ = fmt.Fprintf(h, "%d\x00%s\x00%s\x00%s\x00%s", r.Version, r.IP, r.ContainerID, r.IfName,
		r.Created.UTC().Format(time.RFC3339Nano)) // a hash.Hash never fails to write
	if r.Version == 1 {
		if r.Conflict != "" {
			// Only when set, so that records written before the field
			// existed keep their checksums.
			_, _ = fmt.Fprintf(h, "\x00%s", r.Conflict)
		}
		return fmt.Sprintf("%08x", h.Sum32())
	}
	released := ""
	if !r.Released.IsZero() {
		released = r.Released.UTC().Format(time.RFC3339Nano)
	}
	_, _ = fmt.Fprintf(h, "\x00%s\x00%s\x00%s\x00%s\x00%s\x00%s\x00%s",
		r.Conflict, r.Host, r.Boot, r.Netns, r.Workload, r.WorkloadUID, released)
	return fmt.Sprintf("%08x", h.Sum32())
}

func encodeLease(l store.Lease) []byte {
	r := leaseRecord{
		Version: leaseVersion, IP: l.IP.String(), ContainerID: l.ContainerID,
		IfName: l.IfName, Created: l.Created.UTC(), Conflict: l.Conflict,
		Host: l.Host, Boot: l.Boot, Netns: l.Netns, Workload: l.Workload, WorkloadUID: l.WorkloadUID,
	}
	if !l.Released.IsZero() {
		r.Released = l.Released.UTC()
	}
	r.Sum = r.sum()
	return r.encode()
}

// decodeLease decodes the record stored under the file name name. It
// accepts exactly what encodeLease writes, or a version 1 record: one JSON
// object with no unknown fields, a valid checksum, valid names and an
// address equal to name, or any address if name is "" (an index entry that
// is a lease record, see decodeAttach).
func decodeLease(name string, data []byte) (store.Lease, error) {
	l, _, err := decodeLeaseVersion(name, data)
	return l, err
}

// decodeLeaseVersion is decodeLease, also returning the record's version.
func decodeLeaseVersion(name string, data []byte) (store.Lease, int, error) {
	label := name
	if name == "" {
		label = "(index entry)"
	}
	var r leaseRecord
	if err := store.DecodeRecord(data, &r); err != nil {
		return store.Lease{}, 0, fmt.Errorf("lease %s: %w: %w", label, store.ErrCorrupt, err)
	}
	v1Extra := r.Host != "" || r.Boot != "" || r.Netns != "" || r.Workload != "" || r.WorkloadUID != "" || !r.Released.IsZero()
	if r.Version != leaseVersion && (r.Version != 1 || v1Extra) {
		return store.Lease{}, 0, fmt.Errorf("lease %s: version %d, want 1 or %d: %w", label, r.Version, leaseVersion, store.ErrCorrupt)
	}
	if r.Sum != r.sum() {
		return store.Lease{}, 0, fmt.Errorf("lease %s: checksum mismatch: %w", label, store.ErrCorrupt)
	}
	ip, err := netip.ParseAddr(r.IP)
	if err != nil || (name != "" && ip.String() != name) || ip.Zone() != "" || ip.Is4In6() {
		return store.Lease{}, 0, fmt.Errorf("lease %s: records address %q: %w", label, r.IP, store.ErrCorrupt)
	}
	if err := store.ValidateAttachment(r.ContainerID, r.IfName); err != nil {
		return store.Lease{}, 0, fmt.Errorf("lease %s: %w: %w", label, store.ErrCorrupt, err)
	}
	l := store.Lease{
		IP: ip, ContainerID: r.ContainerID, IfName: r.IfName, Created: r.Created, Conflict: r.Conflict,
		Host: r.Host, Boot: r.Boot, Netns: r.Netns, Workload: r.Workload, WorkloadUID: r.WorkloadUID, Released: r.Released,
	}
	if err := l.ValidateText(); err != nil {
		return store.Lease{}, 0, fmt.Errorf("lease %s: %w: %w", label, store.ErrCorrupt, err)
	}
	return l, r.Version, nil
}

// attachRecord is the JSON of attach/<containerID>=<ifName>: the addresses
// an attachment holds or is about to hold (see Reserve for why an entry can
// name an address that the attachment does not hold).
type attachRecord struct {
	Version     int      `json:"v"`
	ContainerID string   `json:"containerID"`
	IfName      string   `json:"ifName"`
	IPs         []string `json:"ips"`
	Sum         string   `json:"crc32c"`
}

func (r *attachRecord) sum() string {
	h := crc32.New(castagnoli())
	_, _ = fmt.Fprintf(h, "%d\x00%s\x00%s\x00%s", r.Version, r.ContainerID, r.IfName, strings.Join(r.IPs, ","))
	return fmt.Sprintf("%08x", h.Sum32())
}

func encodeAttach(containerID, ifName string, ips []netip.Addr) []byte {
	r := attachRecord{Version: recordVersion, ContainerID: containerID, IfName: ifName, IPs: []string{}}
	for _, ip := range ips {
		r.IPs = append(r.IPs, ip.String())
	}
	r.Sum = r.sum()
	return r.encode()
}

// decodeAttach decodes an index entry: an index record, or a lease record
// of the attachment, which names that one address (Store.reserveFirst
// writes the first address of an attachment as a link to its lease). Only
// an index record has an "ips" member; JSON escapes every quote inside a
// string, so no value can contain the key.
func decodeAttach(containerID, ifName string, data []byte) ([]netip.Addr, error) {
	subject := attachName(containerID, ifName)
	if !bytes.Contains(data, []byte(`"ips":`)) {
		l, err := decodeLease("", data)
		if err != nil {
			return nil, fmt.Errorf("attachment %s: %w", subject, err)
		}
		if l.ContainerID != containerID || l.IfName != ifName {
			return nil, fmt.Errorf("attachment %s: lease of %s names %s: %w", subject, l.IP, attachName(l.ContainerID, l.IfName), store.ErrCorrupt)
		}
		return []netip.Addr{l.IP}, nil
	}
	var r attachRecord
	if err := store.DecodeRecord(data, &r); err != nil {
		return nil, fmt.Errorf("attachment %s: %w: %w", subject, store.ErrCorrupt, err)
	}
	if r.Version != recordVersion || r.Sum != r.sum() || r.ContainerID != containerID || r.IfName != ifName {
		return nil, fmt.Errorf("attachment %s: bad version, checksum or identity: %w", subject, store.ErrCorrupt)
	}
	ips := make([]netip.Addr, 0, len(r.IPs))
	for _, s := range r.IPs {
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.String() != s || ip.Zone() != "" || ip.Is4In6() {
			// Reserve and Import never write these (as for a lease).
			return nil, fmt.Errorf("attachment %s: address %q: %w", subject, s, store.ErrCorrupt)
		}
		if !slices.Contains(ips, ip) {
			ips = append(ips, ip)
		}
	}
	return ips, nil
}

// attachName is the file name of an attachment's index entry. A container
// ID cannot contain '=' (store.ValidateName), so the name splits back
// unambiguously at the first '='.
func attachName(containerID, ifName string) string { return containerID + "=" + ifName }

func splitAttachName(name string) (containerID, ifName string, ok bool) {
	containerID, ifName, ok = strings.Cut(name, "=")
	return containerID, ifName, ok && store.ValidateAttachment(containerID, ifName) == nil
}
