package disk

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/safefs"
)

// Problem and FsckReport are the store package's, shared by every backend.
type (
	Problem    = store.Problem
	FsckReport = store.FsckReport
)

var _ store.Checker = (*Store)(nil)

// Fsck checks the whole store: leftover temporary files, files that are
// not records, damaged leases and index entries, index entries naming
// addresses their attachment does not hold, leases missing from their
// attachment's index, and a bitmap that disagrees with the leases. With
// repair it fixes each: a damaged lease claimed by exactly one index entry
// is rewritten for that attachment; any other damaged lease is moved to
// quarantine/ (which frees its address, so it is reported loudly); the
// index and the bitmap are rebuilt from the leases. The lock must be held.
func (s *Store) Fsck(_ context.Context, repair bool) (FsckReport, error) {
	var rep FsckReport
	if err := s.requireLock("fsck"); err != nil {
		return rep, err
	}
	note := func(p Problem) { rep.Problems = append(rep.Problems, p) }
	fix := func(p Problem, do func() error) error {
		if repair {
			if err := do(); err != nil {
				return fmt.Errorf("repair %s: %w", p.Where, err)
			}
			p.Repaired = true
		}
		note(p)
		return nil
	}

	// Temporary files and strays in every directory.
	for _, sub := range []string{"", leaseDir, attachDir, bitmapDir, cursorDir} {
		entries, err := os.ReadDir(filepath.Join(s.dir, sub))
		if err != nil {
			return rep, s.unavailable("read "+sub, err)
		}
		for _, e := range entries {
			rel := filepath.Join(sub, e.Name())
			if strings.HasPrefix(e.Name(), tempPrefix) {
				if err := fix(Problem{Kind: "temp", Where: rel, Detail: "leftover temporary file"}, func() error {
					return os.Remove(filepath.Join(s.dir, rel))
				}); err != nil {
					return rep, err
				}
			}
		}
	}

	// Leases.
	entries, err := os.ReadDir(filepath.Join(s.dir, leaseDir))
	if err != nil {
		return rep, s.unavailable("read leases", err)
	}
	valid := map[netip.Addr]store.Lease{}
	var corrupt []netip.Addr
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, tempPrefix) {
			continue
		}
		rel := filepath.Join(leaseDir, name)
		ip, perr := netip.ParseAddr(name)
		if perr != nil || ip.String() != name || !e.Type().IsRegular() {
			if err := fix(Problem{Kind: "stray", Where: rel, Detail: "not a lease file name"}, func() error {
				return s.quarantine(rel)
			}); err != nil {
				return rep, err
			}
			continue
		}
		l, version, err := s.readLeaseVersion(ip)
		switch {
		case err == nil:
			valid[ip] = l
			if version < leaseVersion {
				if err := fix(Problem{Kind: "old-format", Where: rel, Detail: fmt.Sprintf("lease record version %d; rewritten as version %d "+
					"(its host and boot stay unknown, so the sweep after a reboot leaves it alone)", version, leaseVersion)}, func() error {
					return s.writeFileMode(leaseDir, name, encodeLease(l), true, false) // replaces it atomically
				}); err != nil {
					return rep, err
				}
			}
		case errors.Is(err, store.ErrCorrupt):
			corrupt = append(corrupt, ip)
		default:
			return rep, err
		}
	}

	// Index entries.
	entries, err = os.ReadDir(filepath.Join(s.dir, attachDir))
	if err != nil {
		return rep, s.unavailable("read attachments", err)
	}
	type attachment struct{ id, ifName string }
	index := map[attachment][]netip.Addr{}
	damagedIndex := map[attachment]bool{}
	claims := map[netip.Addr][]attachment{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, tempPrefix) {
			continue
		}
		rel := filepath.Join(attachDir, name)
		id, ifName, ok := splitAttachName(name)
		if !ok || !e.Type().IsRegular() {
			if err := fix(Problem{Kind: "stray", Where: rel, Detail: "not an index entry name"}, func() error {
				return s.quarantine(rel)
			}); err != nil {
				return rep, err
			}
			continue
		}
		at := attachment{id, ifName}
		ips, err := s.readAttach(id, ifName)
		if errors.Is(err, store.ErrCorrupt) {
			// Rebuilt below from the leases.
			note(Problem{Kind: "corrupt-index", Where: rel, Detail: err.Error(), Repaired: repair})
			index[at] = nil
			damagedIndex[at] = true
			continue
		}
		if err != nil {
			return rep, err
		}
		index[at] = ips
		for _, ip := range ips {
			claims[ip] = append(claims[ip], at)
		}
	}

	// Damaged leases: restore for a sole claimant, else quarantine.
	for _, ip := range corrupt {
		rel := filepath.Join(leaseDir, ip.String())
		owners := claims[ip]
		if len(owners) == 1 {
			l := store.Lease{IP: ip, ContainerID: owners[0].id, IfName: owners[0].ifName, Created: time.Now()}
			if err := fix(Problem{Kind: "corrupt-lease", Where: rel, Detail: fmt.Sprintf("damaged; rewritten for its sole claimant %s/%s", l.ContainerID, l.IfName)}, func() error {
				if err := s.quarantine(rel); err != nil {
					return err
				}
				return s.writeFileMode(leaseDir, ip.String(), encodeLease(l), true, true)
			}); err != nil {
				return rep, err
			}
			if repair {
				valid[ip] = l
			}
			continue
		}
		if err := fix(Problem{Kind: "corrupt-lease", Where: rel, Detail: "damaged and claimed by no single attachment; moved to quarantine/, which frees the address"}, func() error {
			return s.quarantine(rel)
		}); err != nil {
			return rep, err
		}
	}

	// The index as the leases say it should be.
	want := map[attachment][]netip.Addr{}
	for ip, l := range valid {
		at := attachment{l.ContainerID, l.IfName}
		want[at] = append(want[at], ip)
	}
	if !repair {
		// A damaged lease left in place keeps its claims: whose it is
		// cannot be told, so its index entries are not called stale.
		for _, ip := range corrupt {
			for _, at := range claims[ip] {
				want[at] = append(want[at], ip)
			}
		}
	}
	for at := range index {
		if _, ok := want[at]; !ok {
			want[at] = nil
		}
	}
	for at, ips := range want {
		slices.SortFunc(ips, netip.Addr.Compare)
		have, known := index[at]
		have = slices.Clone(have)
		slices.SortFunc(have, netip.Addr.Compare)
		rel := filepath.Join(attachDir, attachName(at.id, at.ifName))
		var p Problem
		switch {
		case damagedIndex[at]:
			// Already reported; the repair rewrites it from the leases.
			if repair {
				if err := s.writeAttach(at.id, at.ifName, ips); err != nil {
					return rep, fmt.Errorf("repair %s: %w", rel, err)
				}
			}
			continue
		case known && slices.Equal(have, ips) && len(ips) > 0:
			continue
		case len(ips) == 0:
			p = Problem{Kind: "stale-index", Where: rel, Detail: fmt.Sprintf("lists %v but holds no lease", have)}
		case !known:
			p = Problem{Kind: "orphan-lease", Where: rel, Detail: fmt.Sprintf("leases %v have no index entry", ips)}
		default:
			p = Problem{Kind: "stale-index", Where: rel, Detail: fmt.Sprintf("lists %v, the leases say %v", have, ips)}
		}
		if err := fix(p, func() error { return s.writeAttach(at.id, at.ifName, ips) }); err != nil {
			return rep, err
		}
	}
	for _, ips := range want {
		if len(ips) > 0 {
			rep.Attachments++
		}
	}
	rep.Leases = len(valid)

	// The bitmap as the lease files say it should be. A damaged lease that
	// stays (no repair) keeps its bit: its file still blocks the address.
	chunks := map[netip.Addr]*chunk{}
	mark := func(ip netip.Addr) {
		b := chunkBase(ip)
		if chunks[b] == nil {
			chunks[b] = new(chunk)
		}
		chunks[b].set(chunkIndex(ip), true)
	}
	for ip := range valid {
		mark(ip)
	}
	if !repair {
		for _, ip := range corrupt {
			mark(ip)
		}
	}
	entries, err = os.ReadDir(filepath.Join(s.dir, bitmapDir))
	if err != nil {
		return rep, s.unavailable("read bitmap", err)
	}
	for _, e := range entries {
		if base, err := netip.ParseAddr(e.Name()); err == nil && chunks[base] == nil {
			chunks[base] = new(chunk)
		}
	}
	clear(s.chunks)
	for base, c := range chunks {
		rel := filepath.Join(bitmapDir, base.String())
		var have chunk
		b, err := safefs.ReadFile(filepath.Join(s.dir, rel), int64(chunkSize))
		detail := "disagrees with the lease files"
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if c.empty() {
				continue
			}
		case err != nil && !planted(err):
			return rep, s.unavailable("read "+rel, err)
		case err != nil:
			detail = err.Error()
		case have.unmarshal(b) != nil || !have.equal(c):
		case c.empty():
			// A chunk emptied before empty chunks were deleted, or whose
			// unlink a crash undid: harmless, but 8 KiB for nothing.
			detail = "holds no address: a leftover to delete"
		default:
			continue
		}
		if err := fix(Problem{Kind: "bitmap", Where: rel, Detail: detail}, func() error {
			if c.empty() {
				return s.removeFile(bitmapDir, base.String())
			}
			return s.writeChunk(base, c) // c.onDisk is false: written whole
		}); err != nil {
			return rep, err
		}
	}

	// Cursors are hints; an unreadable one is dropped.
	entries, err = os.ReadDir(filepath.Join(s.dir, cursorDir))
	if err != nil {
		return rep, s.unavailable("read cursors", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		rel := filepath.Join(cursorDir, e.Name())
		b, err := safefs.ReadFile(filepath.Join(s.dir, rel), maxCursorSize)
		if err != nil && !planted(err) {
			return rep, s.unavailable("read "+rel, err)
		}
		if _, perr := netip.ParseAddr(strings.TrimSpace(string(b))); err != nil || perr != nil {
			if err := fix(Problem{Kind: "cursor", Where: rel, Detail: "unreadable"}, func() error {
				return os.Remove(filepath.Join(s.dir, rel))
			}); err != nil {
				return rep, err
			}
		}
	}
	return rep, nil
}

// quarantine moves a file (path relative to the store) to quarantine/,
// keeping it for inspection.
func (s *Store) quarantine(rel string) error {
	qdir := filepath.Join(s.dir, quarantineDir)
	if err := safefs.MkdirAll(qdir, 0o700); err != nil {
		return err
	}
	dst := filepath.Join(qdir, fmt.Sprintf("%s.%d", strings.ReplaceAll(rel, "/", "_"), time.Now().UnixNano()))
	if err := os.Rename(filepath.Join(s.dir, rel), dst); err != nil {
		return err
	}
	return syncDir(filepath.Dir(filepath.Join(s.dir, rel)))
}
