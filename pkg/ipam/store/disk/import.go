package disk

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

var _ store.Importer = (*Store)(nil)

// Import adds many leases at once, for migrate and for tests and
// benchmarks that need a large store. It writes the same records as
// Reserve in the same order (index entries, then leases, then the bitmap)
// but flushes them with one sync(2) instead of an fsync per file, so a
// power cut in the middle can leave damaged or unindexed records that
// fsck --repair must fix; a completed Import is as durable as Reserve.
// A lease already held by the same attachment is skipped; one held by
// another is reported (ErrReserved) and the rest imported.
func (s *Store) Import(_ context.Context, leases []store.Lease) (int, error) {
	if err := s.requireLock("import"); err != nil {
		return 0, err
	}
	type attachment struct{ id, ifName string }
	byAttach := map[attachment][]netip.Addr{}
	var order []attachment
	for _, l := range leases {
		if err := store.ValidateAttachment(l.ContainerID, l.IfName); err != nil {
			return 0, fmt.Errorf("import %s: %w", l.IP, err)
		}
		if !l.IP.IsValid() || l.IP.Zone() != "" || l.IP.Is4In6() {
			return 0, fmt.Errorf("import %s: not a plain unicast address", l.IP)
		}
		at := attachment{l.ContainerID, l.IfName}
		if _, ok := byAttach[at]; !ok {
			order = append(order, at)
		}
		byAttach[at] = append(byAttach[at], l.IP)
	}
	for _, at := range order {
		have, err := s.readAttach(at.id, at.ifName)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return 0, fmt.Errorf("import: %w", err)
		}
		merged := slices.Clone(have)
		for _, ip := range byAttach[at] {
			if !slices.Contains(merged, ip) {
				merged = append(merged, ip)
			}
		}
		if len(merged) == len(have) {
			continue
		}
		name := attachName(at.id, at.ifName)
		if err := s.writeFile(attachDir, name, encodeAttach(at.id, at.ifName, merged), false); err != nil {
			return 0, s.unavailable("write attachment "+name, err)
		}
	}
	var added []netip.Addr
	var conflicts []error
	for _, l := range leases {
		if l.Created.IsZero() {
			l.Created = time.Now()
		}
		err := s.writeFileMode(leaseDir, l.IP.String(), encodeLease(l), false, true)
		if errors.Is(err, errExist) {
			held, gerr := s.readLease(l.IP)
			if gerr != nil || held.ContainerID != l.ContainerID || held.IfName != l.IfName {
				conflicts = append(conflicts, fmt.Errorf("import %s for %s/%s: held by %s/%s: %w", l.IP, l.ContainerID, l.IfName, held.ContainerID, held.IfName, errors.Join(store.ErrReserved, gerr)))
			}
			added = append(added, l.IP) // its bit must be set either way
			continue
		}
		if err != nil {
			return 0, s.unavailable("write lease "+l.IP.String(), err)
		}
		added = append(added, l.IP)
	}
	syscall.Sync() // one flush for every file above, before any bit is set
	if err := s.setBits(added, true, false); err != nil {
		return 0, fmt.Errorf("import: %w", err)
	}
	return len(added) - len(conflicts), errors.Join(conflicts...)
}
