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
	"syscall"
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
	return s.fsck(repair, Boot{})
}

// fsck is Fsck. A damaged lease restored for its sole claimant records
// ended, when given, as its host and boot, and its file's time as its
// creation: the repair after a boot (boot.go) restores leases of that boot,
// which the sweep must then give back like the rest of it.
func (s *Store) fsck(repair bool, ended Boot) (FsckReport, error) {
	if err := s.requireLock("fsck"); err != nil {
		return FsckReport{}, err
	}
	f := &fsckRun{
		s: s, repair: repair, ended: ended,
		valid: map[netip.Addr]store.Lease{}, index: map[attachment][]netip.Addr{},
		damagedIndex: map[attachment]bool{}, claims: map[netip.Addr][]attachment{},
		corruptFiles: map[fileID]netip.Addr{},
	}
	for _, step := range []func() error{
		f.temporaries,   // leftover temporary files in every directory
		f.leases,        // read every lease; note strays and old formats
		f.indexEntries,  // read every index entry and what it claims
		f.damagedLeases, // restore for a sole claimant, else quarantine
		f.reindex,       // the index as the leases say it should be
		f.bitmap,        // the bitmap as the lease files say it should be
		f.cursors,       // hints: an unreadable one is dropped
	} {
		if err := step(); err != nil {
			return f.rep, err
		}
	}
	return f.rep, nil
}

// attachment is an attachment identity as fsck groups records by it.
type attachment struct{ id, ifName string }

// fsckRun is one run of Fsck: what its steps have found so far.
type fsckRun struct {
	s      *Store
	repair bool
	ended  Boot // see fsck
	rep    FsckReport

	valid        map[netip.Addr]store.Lease  // leases that decode
	corrupt      []netip.Addr                // lease files that do not
	corruptFiles map[fileID]netip.Addr       // ... by file, see indexEntries
	index        map[attachment][]netip.Addr // index entries as read
	damagedIndex map[attachment]bool         // index entries that do not decode
	claims       map[netip.Addr][]attachment // who the index says holds each address
}

func (f *fsckRun) note(p Problem) { f.rep.Problems = append(f.rep.Problems, p) }

// fix notes p and, with repair, runs do and marks p repaired.
func (f *fsckRun) fix(p Problem, do func() error) error {
	if f.repair {
		if err := do(); err != nil {
			return fmt.Errorf("repair %s: %w", p.Where, err)
		}
		p.Repaired = true
	}
	f.note(p)
	return nil
}

// temporaries removes the temporary files left in every directory.
func (f *fsckRun) temporaries() error {
	s := f.s
	for _, sub := range []string{"", leaseDir, attachDir, bitmapDir, cursorDir} {
		entries, err := os.ReadDir(filepath.Join(s.dir, sub))
		if err != nil {
			return s.unavailable("read "+sub, err)
		}
		for _, e := range entries {
			rel := filepath.Join(sub, e.Name())
			if strings.HasPrefix(e.Name(), tempPrefix) {
				if err := f.fix(Problem{Kind: "temp", Where: rel, Detail: "leftover temporary file"}, func() error {
					return os.Remove(filepath.Join(s.dir, rel))
				}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// leases reads every lease file: valid ones are kept, damaged ones listed
// for damagedLeases, strays quarantined and old formats rewritten.
func (f *fsckRun) leases() error {
	s := f.s
	entries, err := os.ReadDir(filepath.Join(s.dir, leaseDir))
	if err != nil {
		return s.unavailable("read leases", err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, tempPrefix) {
			continue
		}
		rel := filepath.Join(leaseDir, name)
		ip, perr := netip.ParseAddr(name)
		if perr != nil || ip.String() != name || !e.Type().IsRegular() {
			if err := f.fix(Problem{Kind: "stray", Where: rel, Detail: "not a lease file name"}, func() error {
				return s.quarantine(rel)
			}); err != nil {
				return err
			}
			continue
		}
		l, version, err := s.readLeaseVersion(ip)
		switch {
		case err == nil:
			f.valid[ip] = l
			if version < leaseVersion {
				if err := f.fix(Problem{Kind: "old-format", Where: rel, Detail: fmt.Sprintf("lease record version %d; rewritten as version %d "+
					"(its host and boot stay unknown, so the sweep after a reboot leaves it alone)", version, leaseVersion)}, func() error {
					return s.writeFileMode(leaseDir, name, encodeLease(l), true, false) // replaces it atomically
				}); err != nil {
					return err
				}
			}
		case errors.Is(err, store.ErrCorrupt):
			f.corrupt = append(f.corrupt, ip)
			if file, ok := fileOf(filepath.Join(s.dir, rel)); ok {
				f.corruptFiles[file] = ip
			}
		default:
			return err
		}
	}
	return nil
}

// indexEntries reads every index entry and records which addresses each
// attachment claims; damaged entries are noted, and rebuilt by reindex.
func (f *fsckRun) indexEntries() error {
	s := f.s
	entries, err := os.ReadDir(filepath.Join(s.dir, attachDir))
	if err != nil {
		return s.unavailable("read attachments", err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, tempPrefix) {
			continue
		}
		rel := filepath.Join(attachDir, name)
		id, ifName, ok := splitAttachName(name)
		if !ok || !e.Type().IsRegular() {
			if err := f.fix(Problem{Kind: "stray", Where: rel, Detail: "not an index entry name"}, func() error {
				return s.quarantine(rel)
			}); err != nil {
				return err
			}
			continue
		}
		at := attachment{id, ifName}
		ips, err := s.readAttach(id, ifName)
		if errors.Is(err, store.ErrCorrupt) {
			// Rebuilt by reindex from the leases. An entry that is a link
			// to its first lease (Store.reserveFirst) shares that lease's
			// damage, and still tells whose the lease is: by its name.
			detail := err.Error()
			if file, ok := fileOf(filepath.Join(s.dir, rel)); ok {
				if ip, ok := f.corruptFiles[file]; ok {
					f.claims[ip] = append(f.claims[ip], at)
					detail = fmt.Sprintf("the damaged lease of %s (one file under two names), which its name claims for %s/%s", ip, id, ifName)
				}
			}
			f.note(Problem{Kind: "corrupt-index", Where: rel, Detail: detail, Repaired: f.repair})
			f.index[at] = nil
			f.damagedIndex[at] = true
			continue
		}
		if err != nil {
			return err
		}
		f.index[at] = ips
		for _, ip := range ips {
			f.claims[ip] = append(f.claims[ip], at)
		}
	}
	return nil
}

// fileID is a file as the kernel knows it, whatever its names.
type fileID struct{ dev, ino uint64 }

// fileOf identifies the file at path, without following a symbolic link.
func fileOf(path string) (fileID, bool) {
	fi, err := os.Lstat(path)
	if err != nil {
		return fileID{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{uint64(st.Dev), st.Ino}, true //nolint:unconvert // Dev's type differs between architectures
}

// damagedLeases rewrites a damaged lease for its sole claimant, or else
// moves it to quarantine/, which frees the address.
func (f *fsckRun) damagedLeases() error {
	s := f.s
	for _, ip := range f.corrupt {
		rel := filepath.Join(leaseDir, ip.String())
		owners := f.claims[ip]
		if len(owners) == 1 {
			l := store.Lease{IP: ip, ContainerID: owners[0].id, IfName: owners[0].ifName, Created: time.Now()}
			if f.ended.known() {
				l.Host, l.Boot = f.ended.Host, f.ended.ID
				if fi, err := os.Lstat(filepath.Join(s.dir, rel)); err == nil {
					l.Created = fi.ModTime().UTC()
				}
			}
			if err := f.fix(Problem{Kind: "corrupt-lease", Where: rel, Detail: fmt.Sprintf("damaged; rewritten for its sole claimant %s/%s", l.ContainerID, l.IfName)}, func() error {
				// A copy kept, then the record replaced in one rename: the
				// address never has no lease, so a repair killed half-way
				// cannot free it (the next one does the same again).
				if err := s.quarantineCopy(rel); err != nil {
					return err
				}
				return s.writeFileMode(leaseDir, ip.String(), encodeLease(l), true, false)
			}); err != nil {
				return err
			}
			if f.repair {
				f.valid[ip] = l
			}
			continue
		}
		if err := f.fix(Problem{Kind: "corrupt-lease", Where: rel, Detail: "damaged and claimed by no single attachment; moved to quarantine/, which frees the address"}, func() error {
			return s.quarantine(rel)
		}); err != nil {
			return err
		}
	}
	return nil
}

// wantIndex is the index as the leases say it should be, with an entry
// (maybe empty) for every attachment the index has now.
func (f *fsckRun) wantIndex() map[attachment][]netip.Addr {
	want := map[attachment][]netip.Addr{}
	for ip, l := range f.valid {
		at := attachment{l.ContainerID, l.IfName}
		want[at] = append(want[at], ip)
	}
	if !f.repair {
		// A damaged lease left in place keeps its claims: whose it is
		// cannot be told, so its index entries are not called stale.
		for _, ip := range f.corrupt {
			for _, at := range f.claims[ip] {
				want[at] = append(want[at], ip)
			}
		}
	}
	for at := range f.index {
		if _, ok := want[at]; !ok {
			want[at] = nil
		}
	}
	return want
}

// reindex compares each index entry with what the leases say and
// rewrites those that differ; it counts the leases and attachments.
func (f *fsckRun) reindex() error {
	s := f.s
	want := f.wantIndex()
	for at, ips := range want {
		slices.SortFunc(ips, netip.Addr.Compare)
		have, known := f.index[at]
		have = slices.Clone(have)
		slices.SortFunc(have, netip.Addr.Compare)
		rel := filepath.Join(attachDir, attachName(at.id, at.ifName))
		var p Problem
		switch {
		case f.damagedIndex[at]:
			// Already reported; the repair rewrites it from the leases.
			if f.repair {
				if err := s.writeAttach(at.id, at.ifName, ips, false); err != nil {
					return fmt.Errorf("repair %s: %w", rel, err)
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
		if err := f.fix(p, func() error { return s.writeAttach(at.id, at.ifName, ips, false) }); err != nil {
			return err
		}
	}
	for _, ips := range want {
		if len(ips) > 0 {
			f.rep.Attachments++
		}
	}
	f.rep.Leases = len(f.valid)
	return nil
}

// wantBitmap is the bitmap as the lease files say it should be, with a
// chunk (maybe empty) for every chunk file there is now. A damaged lease
// that stays (no repair) keeps its bit: its file still blocks the address.
func (f *fsckRun) wantBitmap() (map[netip.Addr]*chunk, error) {
	chunks := map[netip.Addr]*chunk{}
	mark := func(ip netip.Addr) {
		b := chunkBase(ip)
		if chunks[b] == nil {
			chunks[b] = new(chunk)
		}
		chunks[b].set(chunkIndex(ip), true)
	}
	for ip := range f.valid {
		mark(ip)
	}
	if !f.repair {
		for _, ip := range f.corrupt {
			mark(ip)
		}
	}
	entries, err := os.ReadDir(filepath.Join(f.s.dir, bitmapDir))
	if err != nil {
		return nil, f.s.unavailable("read bitmap", err)
	}
	for _, e := range entries {
		if base, err := netip.ParseAddr(e.Name()); err == nil && chunks[base] == nil {
			chunks[base] = new(chunk)
		}
	}
	return chunks, nil
}

// bitmap compares each bitmap chunk with what the lease files say and
// rewrites (or deletes) those that differ.
func (f *fsckRun) bitmap() error {
	s := f.s
	chunks, err := f.wantBitmap()
	if err != nil {
		return err
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
			return s.unavailable("read "+rel, err)
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
		if err := f.fix(Problem{Kind: "bitmap", Where: rel, Detail: detail}, func() error {
			if c.empty() {
				return s.removeFile(bitmapDir, base.String())
			}
			return s.writeChunk(base, c, false) // c.onDisk is false: written whole
		}); err != nil {
			return err
		}
	}
	return nil
}

// cursors drops the unreadable cursors: they are hints.
func (f *fsckRun) cursors() error {
	s := f.s
	entries, err := os.ReadDir(filepath.Join(s.dir, cursorDir))
	if err != nil {
		return s.unavailable("read cursors", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		rel := filepath.Join(cursorDir, e.Name())
		b, err := safefs.ReadFile(filepath.Join(s.dir, rel), maxCursorSize)
		if err != nil && !planted(err) {
			return s.unavailable("read "+rel, err)
		}
		if _, perr := netip.ParseAddr(strings.TrimSpace(string(b))); err != nil || perr != nil {
			if err := f.fix(Problem{Kind: "cursor", Where: rel, Detail: "unreadable"}, func() error {
				return os.Remove(filepath.Join(s.dir, rel))
			}); err != nil {
				return err
			}
		}
	}
	return nil
}

// quarantine moves a file (path relative to the store) to quarantine/,
// keeping it for inspection.
func (s *Store) quarantine(rel string) error {
	dst, err := s.quarantineName(rel)
	if err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(s.dir, rel), dst); err != nil {
		return err
	}
	return s.syncDir(filepath.Dir(filepath.Join(s.dir, rel)))
}

// quarantineCopy puts a second name of the file rel in quarantine/ and
// leaves rel in place, for the caller to replace.
func (s *Store) quarantineCopy(rel string) error {
	dst, err := s.quarantineName(rel)
	if err != nil {
		return err
	}
	if err := os.Link(filepath.Join(s.dir, rel), dst); err != nil {
		return err
	}
	return s.syncDir(filepath.Dir(dst))
}

// quarantineName makes quarantine/ if needed and names rel's place there.
func (s *Store) quarantineName(rel string) (string, error) {
	qdir := filepath.Join(s.dir, quarantineDir)
	if err := safefs.MkdirAll(qdir, 0o700); err != nil {
		return "", err
	}
	return filepath.Join(qdir, fmt.Sprintf("%s.%d", strings.ReplaceAll(rel, "/", "_"), time.Now().UnixNano())), nil
}
