// Package disk is the directory store of maclan-ipam: one lease file per
// address, one index entry per attachment, an allocation bitmap and a
// round-robin cursor per range set, all under <dataDir>/<network>/:
//
//	lock                       flock(2) target
//	leases/<ip>                one lease record (JSON with a CRC-32C)
//	attach/<containerID>=<if>  the addresses of one attachment (index); for
//	                           an attachment's first address, a second
//	                           name of its lease file (Store.reserveFirst)
//	bitmap/<chunk address>     allocation bitmap, 65,536 addresses a file
//	cursor/<range set>         last address handed out in that set
//	quarantine/                damaged leases moved aside by fsck --repair
//
// Every file is written whole to a temporary name, fsynced and then
// renamed (or, for a lease, hard-linked, which fails if the address is
// taken: an atomic create-if-absent), and the directory is fsynced. Files
// are 0600, directories 0700. No operation reads the whole directory except
// List, GC and fsck, and recovery from damage.
//
// Trust. The plugin runs as root, so a name someone else could plant in
// the store (a symbolic link to /etc/shadow, a FIFO) would make it write or
// read where they chose. New therefore refuses a data directory, a network
// directory or any directory in it that is a symbolic link, is owned by
// anyone but root (or the user running the program, for tests and tools
// run by hand) or is writable by group or others (package safefs); no one
// else can then add a name to the store. Every record is still opened
// without following a symbolic link and only if it is a regular file, for
// stores made before that check: such a record counts as damaged (fsck
// quarantines it), a bitmap chunk or cursor is rebuilt or dropped, and a
// write replaces the name by rename(2), never writing through it.
//
// Crash safety, step by step. Reserve writes the attachment's index entry
// first (for a first address, by linking the lease's file under the
// entry's name before its own), then the lease, then the bitmap bit; Release clears the bit, then
// removes the lease, then the index entry. So a crash can leave only:
//   - an index entry naming an address whose lease does not exist or belongs
//     to someone else. Harmless: every use of an index entry checks the
//     lease's owner; DEL removes it; fsck reports and drops it.
//   - a lease whose bitmap bit is clear. Harmless: the next Reserve of that
//     address fails to link, sets the bit and the walk moves on.
//
// It can never leave a lease that its attachment's index does not list, nor
// a set bit without a lease, so neither a DEL nor the allocator is misled.
// Only outside damage (a disk error, a hand edit) produces those; fsck
// detects and repairs them.
//
// Leases that live as long as the boot (Options.Boot with Volatile, see
// boot.go) are written in the same order but without the fsyncs: the
// order is what other processes see, so a crashed plugin leaves the same
// states as above; a power cut, which ends every container of the boot,
// can leave any of these writes lost or torn, and the first call of the
// next boot repairs the store before anything else reads it.
package disk

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/safefs"
)

const (
	leaseDir      = "leases"
	attachDir     = "attach"
	bitmapDir     = "bitmap"
	cursorDir     = "cursor"
	quarantineDir = "quarantine"
	tempPrefix    = ".tmp-"
)

// Read limits: a record is a few hundred bytes; a bigger file is damaged
// (or planted) and is not read whole.
const (
	maxRecordSize = 64 << 10
	maxCursorSize = 256
)

// Options tune a Store.
type Options struct {
	// LockTimeout bounds Lock (default store.DefaultLockTimeout).
	LockTimeout time.Duration
	// Log receives the few lines worth reading when debugging a node:
	// damaged records and what was done about them. Nil discards them. The
	// lines do not name the network: the caller's logger does (the
	// plugin's names it on every line; see also slog.Logger.With).
	Log *slog.Logger
	// Boot is the identity of this host and boot (both fields set, or
	// neither). With it, the first lock taken in a boot repairs what a
	// power cut may have left of an earlier boot's volatile writes
	// (boot.go).
	Boot Boot
	// Volatile (with Boot) writes the leases stamped with exactly this
	// host and boot, and their index entries and bitmap bits, without
	// fsync. Only for stores whose leases nothing needs after the boot:
	// the plugin's reclaimAfterReboot on and stickyFor off (its
	// volatileLeases); a power cut ends every container whose lease it
	// could lose.
	Volatile bool
}

// Store is the directory store of one network.
type Store struct {
	dir      string
	network  string
	opts     Options
	log      *slog.Logger
	lockFile *os.File
	locked   bool
	chunks   map[netip.Addr]*chunk // bitmap chunks read under the current lock
	syncs    int                   // fsyncs issued, for tests
	// bootChecked: checkBoot has run (boot.go).
	bootChecked bool
}

var _ store.Store = (*Store)(nil)

// New opens (creating if needed) the store of network under dataDir. The
// network name must be a valid CNI network name, so it cannot escape
// dataDir.
func New(dataDir, network string, opts Options) (*Store, error) {
	if err := store.ValidateName("network name", network); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if dataDir == "" {
		return nil, errors.New("open store: empty data directory")
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = store.DefaultLockTimeout
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		dir: filepath.Join(dataDir, network), network: network, opts: opts, log: log,
		chunks: map[netip.Addr]*chunk{},
	}
	if err := safefs.MkdirAll(dataDir, 0o700); err != nil {
		return nil, s.untrusted(err)
	}
	for _, sub := range []string{"", leaseDir, attachDir, bitmapDir, cursorDir} {
		if err := safefs.MkdirAll(filepath.Join(s.dir, sub), 0o700); err != nil {
			return nil, s.untrusted(err)
		}
	}
	f, err := safefs.Open(filepath.Join(s.dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, s.unavailable("open lock file", err)
	}
	s.lockFile = f
	return s, nil
}

// Dir is the directory of the store.
func (s *Store) Dir() string { return s.dir }

// Close releases the lock if held and closes the lock file.
func (s *Store) Close() error {
	if s.lockFile == nil {
		return nil
	}
	err := s.lockFile.Close() // closing the descriptor also drops the flock
	s.lockFile, s.locked = nil, false
	if err != nil {
		return s.unavailable("close", err)
	}
	return nil
}

// unavailable wraps an I/O failure as store.ErrUnavailable, naming the
// store and keeping the cause.
func (s *Store) unavailable(what string, err error) error {
	return fmt.Errorf("store %s: %s: %w: %w", s.dir, what, store.ErrUnavailable, err)
}

// untrusted reports a directory that New cannot create or refuses to use
// (see the package comment), with the rule it breaks.
func (s *Store) untrusted(err error) error {
	if errors.Is(err, safefs.ErrUntrusted) {
		err = fmt.Errorf("%w; the data directory and the directories in it must be owned by root and writable by no one else", err)
	}
	return s.unavailable("data directory", err)
}

func (s *Store) requireLock(op string) error {
	if !s.locked {
		return fmt.Errorf("%s in %s: store not locked", op, s.dir)
	}
	return nil
}

// errExist reports that an exclusive create found the name taken.
var errExist = errors.New("file exists")

// writeFile writes data to sub/name atomically: temporary file, fsync,
// then rename (or link when exclusive, failing with errExist if name
// exists), then fsync of the directory. With durable false the fsyncs are
// skipped: the file is still never seen half-written by a reader, but a
// power cut may bring back the previous version.
func (s *Store) writeFile(sub, name string, data []byte, durable bool) error {
	return s.writeFileMode(sub, name, data, durable, false)
}

func (s *Store) writeFileMode(sub, name string, data []byte, durable, exclusive bool) (err error) {
	dir := filepath.Join(s.dir, sub)
	tmp, err := s.writeTemp(dir, name, data, durable)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil || exclusive {
			_ = os.Remove(tmp) // best effort; fsck removes leftovers
		}
	}()
	return s.place(tmp, dir, name, durable, exclusive)
}

// place gives the written temporary file tmp the name dir/name: by rename,
// or when exclusive by link, failing with errExist if the name exists;
// then fsyncs dir if durable.
func (s *Store) place(tmp, dir, name string, durable, exclusive bool) error {
	final := filepath.Join(dir, name)
	var err error
	if exclusive {
		if err = os.Link(tmp, final); errors.Is(err, fs.ErrExist) {
			return errExist
		}
	} else {
		err = os.Rename(tmp, final)
	}
	if err == nil && durable {
		err = s.syncDir(dir)
	}
	return err
}

// writeTemp writes data to a new temporary file in dir, named after name,
// fsyncs it if durable and returns its path. The caller links or renames
// it into place and removes what is left; fsck removes what a crash left.
func (s *Store) writeTemp(dir, name string, data []byte, durable bool) (tmp string, err error) {
	f, err := os.CreateTemp(dir, tempPrefix+name+"-") // mode 0600
	if err != nil {
		return "", err
	}
	tmp = f.Name()
	if _, err = f.Write(data); err == nil && durable {
		s.syncs++
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp) // best effort; fsck removes leftovers
		return "", err
	}
	return tmp, nil
}

func (s *Store) removeFile(sub, name string) error {
	err := os.Remove(filepath.Join(s.dir, sub, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func (s *Store) syncDir(dir string) error {
	s.syncs++
	d, err := safefs.OpenDir(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}

func (s *Store) readLease(ip netip.Addr) (store.Lease, error) {
	l, _, err := s.readLeaseVersion(ip)
	return l, err
}

// readLeaseVersion is readLease, also returning the record's version.
func (s *Store) readLeaseVersion(ip netip.Addr) (store.Lease, int, error) {
	name := ip.String()
	b, err := safefs.ReadFile(filepath.Join(s.dir, leaseDir, name), maxRecordSize)
	if errors.Is(err, fs.ErrNotExist) {
		return store.Lease{}, 0, fmt.Errorf("lease %s: %w", name, store.ErrNotFound)
	}
	if planted(err) {
		return store.Lease{}, 0, fmt.Errorf("lease %s: %w: %w", name, store.ErrCorrupt, err)
	}
	if err != nil {
		return store.Lease{}, 0, s.unavailable("read lease "+name, err)
	}
	return decodeLeaseVersion(name, b)
}

// planted reports a record that is not a small regular file: a symbolic
// link, a FIFO, a device or an oversized file. It is treated as damaged,
// never followed or read whole.
func planted(err error) bool {
	return errors.Is(err, safefs.ErrNotRegular) || errors.Is(err, safefs.ErrTooLarge)
}

// readAttach returns the index entry of an attachment; ErrNotFound if none.
func (s *Store) readAttach(containerID, ifName string) ([]netip.Addr, error) {
	name := attachName(containerID, ifName)
	b, err := safefs.ReadFile(filepath.Join(s.dir, attachDir, name), maxRecordSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("attachment %s: %w", name, store.ErrNotFound)
	}
	if planted(err) {
		return nil, fmt.Errorf("attachment %s: %w: %w", name, store.ErrCorrupt, err)
	}
	if err != nil {
		return nil, s.unavailable("read attachment "+name, err)
	}
	return decodeAttach(containerID, ifName, b)
}

// writeAttach replaces an index entry (durably unless volatile), or
// removes it when ips is empty.
//
// Removal is not fsynced: an entry that comes back after a power cut names
// addresses its attachment no longer holds, which every reader tolerates
// (see the package comment), so the fsync would buy nothing.
func (s *Store) writeAttach(containerID, ifName string, ips []netip.Addr, volatile bool) error {
	name := attachName(containerID, ifName)
	if len(ips) == 0 {
		if err := s.removeFile(attachDir, name); err != nil {
			return s.unavailable("remove attachment "+name, err)
		}
		return nil
	}
	if err := s.writeFile(attachDir, name, encodeAttach(containerID, ifName, ips), !volatile); err != nil {
		return s.unavailable("write attachment "+name, err)
	}
	return nil
}

// Reserve records l. See the package comment for the order of the writes.
func (s *Store) Reserve(_ context.Context, l store.Lease) error {
	if err := s.requireLock("reserve"); err != nil {
		return err
	}
	l, err := store.ForReserve(l)
	if err != nil {
		return err
	}
	volatile := s.volatile(l)

	// 1. Intent: the index entry names the address before the lease exists.
	ips, err := s.readAttach(l.ContainerID, l.IfName)
	if errors.Is(err, store.ErrNotFound) {
		return s.reserveFirst(l, volatile)
	}
	if err != nil {
		return fmt.Errorf("reserve %s: %w", l.IP, err)
	}
	added := !slices.Contains(ips, l.IP)
	if added {
		if err := s.writeAttach(l.ContainerID, l.IfName, append(slices.Clone(ips), l.IP), volatile); err != nil {
			return fmt.Errorf("reserve %s: %w", l.IP, err)
		}
	}

	// 2. The lease itself: create-if-absent.
	err = s.writeFileMode(leaseDir, l.IP.String(), encodeLease(l), !volatile, true)
	if errors.Is(err, errExist) {
		return s.conflict(l, ips, added, volatile)
	}
	if err != nil {
		return s.unavailable("write lease "+l.IP.String(), err)
	}

	// 3. The bitmap, only once the lease is written (durably unless
	// volatile).
	if err := s.setBits([]netip.Addr{l.IP}, true, volatile); err != nil {
		return fmt.Errorf("reserve %s: %w", l.IP, err)
	}
	return nil
}

// reserveFirst is Reserve for an attachment that has no index entry yet,
// the common case, in the same order with one new file instead of two:
// the lease record is written once, to a temporary name, and hard-linked
// first as the attachment's index entry (the intent), then as the lease
// (create-if-absent). An index entry that is a lease record names that
// one address (decodeAttach); a second address replaces it by an index
// record. Creating a file is most of what the store's writes cost on a
// filesystem that has seen many files come and go (ext4 without a
// journal skips each inode freed in the last minutes, one by one, on
// every creation); a link creates none.
func (s *Store) reserveFirst(l store.Lease, volatile bool) error {
	name, ipName := attachName(l.ContainerID, l.IfName), l.IP.String()
	leases := filepath.Join(s.dir, leaseDir)
	tmp, err := s.writeTemp(leases, ipName, encodeLease(l), !volatile)
	if err != nil {
		return s.unavailable("write lease "+ipName, err)
	}
	defer os.Remove(tmp) //nolint:errcheck // best effort; fsck removes leftovers

	if err := s.place(tmp, filepath.Join(s.dir, attachDir), name, !volatile, true); err != nil {
		return fmt.Errorf("reserve %s: %w", l.IP, s.unavailable("write attachment "+name, err))
	}
	err = s.place(tmp, leases, ipName, !volatile, true)
	if errors.Is(err, errExist) {
		return s.conflict(l, nil, true, volatile)
	}
	if err != nil {
		return s.unavailable("write lease "+ipName, err)
	}
	if err := s.setBits([]netip.Addr{l.IP}, true, volatile); err != nil {
		return fmt.Errorf("reserve %s: %w", l.IP, err)
	}
	return nil
}

// conflict reports that l.IP is taken, undoes the intent recorded for it
// and makes sure the bitmap shows the address as used.
func (s *Store) conflict(l store.Lease, ips []netip.Addr, added, volatile bool) error {
	var undo error
	if added {
		undo = s.writeAttach(l.ContainerID, l.IfName, ips, volatile)
	}
	bitErr := s.setBits([]netip.Addr{l.IP}, true, false)
	if err := errors.Join(undo, bitErr); err != nil {
		// Harmless if left as is (see the package comment); worth a line.
		s.log.Warn("could not tidy after a reserve conflict", "ip", l.IP, "err", err)
	}
	held, err := s.readLease(l.IP)
	if err != nil {
		return fmt.Errorf("reserve %s: %w: %w", l.IP, store.ErrReserved, err)
	}
	return fmt.Errorf("reserve %s: held by container %s interface %s: %w", l.IP, held.ContainerID, held.IfName, store.ErrReserved)
}

// Release removes the lease of ip whoever holds it, even a damaged one,
// and drops it from its holder's index entry.
func (s *Store) Release(_ context.Context, ip netip.Addr) error {
	if err := s.requireLock("release"); err != nil {
		return err
	}
	l, err := s.readLease(ip)
	if errors.Is(err, store.ErrNotFound) {
		// Keep the bitmap honest even so; a set bit without a lease is
		// the one state it must never show.
		return errors.Join(fmt.Errorf("release %s: %w", ip, err), s.setBits([]netip.Addr{ip}, false, false))
	}
	if err != nil && !errors.Is(err, store.ErrCorrupt) {
		return fmt.Errorf("release %s: %w", ip, err)
	}
	if err := s.removeLeases([]netip.Addr{ip}, s.volatile(l)); err != nil {
		return fmt.Errorf("release %s: %w", ip, err)
	}
	if l.ContainerID == "" { // damaged record: the holder is unknown
		return nil
	}
	ips, err := s.readAttach(l.ContainerID, l.IfName)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("release %s: %w", ip, err)
	}
	if err := s.writeAttach(l.ContainerID, l.IfName, slices.DeleteFunc(ips, func(a netip.Addr) bool { return a == ip }), s.volatile(l)); err != nil {
		return fmt.Errorf("release %s: %w", ip, err)
	}
	return nil
}

// removeLeases clears the bits of ips durably, then removes their lease
// files and syncs the directory; volatile skips both syncs.
func (s *Store) removeLeases(ips []netip.Addr, volatile bool) error {
	if len(ips) == 0 {
		return nil
	}
	if err := s.setBits(ips, false, volatile); err != nil {
		return err
	}
	for _, ip := range ips {
		if err := s.removeFile(leaseDir, ip.String()); err != nil {
			return s.unavailable("remove lease "+ip.String(), err)
		}
	}
	if volatile {
		return nil
	}
	if err := s.syncDir(filepath.Join(s.dir, leaseDir)); err != nil {
		return s.unavailable("sync leases", err)
	}
	return nil
}

// ReleaseByID removes the attachment's leases through its index entry,
// without reading the rest of the store. A lease that the entry names but
// that belongs to someone else, or is missing, is left alone. A damaged
// lease is left for fsck, since its holder cannot be confirmed.
func (s *Store) ReleaseByID(ctx context.Context, containerID, ifName string) ([]netip.Addr, error) {
	if err := s.requireLock("release"); err != nil {
		return nil, err
	}
	if err := store.ValidateAttachment(containerID, ifName); err != nil {
		return nil, fmt.Errorf("release %s/%s: %w", containerID, ifName, err)
	}
	subject := containerID + "/" + ifName
	ips, err := s.readAttach(containerID, ifName)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case errors.Is(err, store.ErrCorrupt):
		s.log.Warn("index entry damaged; searching every lease instead", "attachment", subject, "err", err)
		if ips, err = s.scanByID(ctx, containerID, ifName); err != nil {
			return nil, fmt.Errorf("release %s: %w", subject, err)
		}
	case err != nil:
		return nil, fmt.Errorf("release %s: %w", subject, err)
	}
	var mine []netip.Addr
	volatile := true // unless one of the leases is not
	for _, ip := range ips {
		l, err := s.readLease(ip)
		switch {
		case err == nil && l.ContainerID == containerID && l.IfName == ifName:
			mine = append(mine, ip)
			volatile = volatile && s.volatile(l)
		case errors.Is(err, store.ErrCorrupt):
			s.log.Warn("lease damaged; leaving it for fsck", "attachment", subject, "ip", ip, "err", err)
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return nil, fmt.Errorf("release %s: %w", subject, err)
		}
	}
	if err := s.removeLeases(mine, volatile); err != nil {
		return nil, fmt.Errorf("release %s: %w", subject, err)
	}
	if err := s.writeAttach(containerID, ifName, nil, volatile); err != nil {
		return mine, fmt.Errorf("release %s: %w", subject, err)
	}
	return mine, nil
}

// scanByID finds an attachment's leases by reading every lease: the
// fallback when its index entry is damaged.
func (s *Store) scanByID(ctx context.Context, containerID, ifName string) ([]netip.Addr, error) {
	leases, err := s.List(ctx)
	if err != nil && !errors.Is(err, store.ErrCorrupt) {
		return nil, err
	}
	var ips []netip.Addr
	for _, l := range leases {
		if l.ContainerID == containerID && l.IfName == ifName {
			ips = append(ips, l.IP)
		}
	}
	return ips, nil
}

// Get returns the lease of ip.
func (s *Store) Get(_ context.Context, ip netip.Addr) (store.Lease, error) {
	if err := s.requireLock("get"); err != nil {
		return store.Lease{}, err
	}
	return s.readLease(ip)
}

// GetByID returns the leases of an attachment through its index entry.
// A damaged lease or index entry is an error wrapping ErrCorrupt.
func (s *Store) GetByID(_ context.Context, containerID, ifName string) ([]store.Lease, error) {
	if err := s.requireLock("get"); err != nil {
		return nil, err
	}
	if err := store.ValidateAttachment(containerID, ifName); err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", containerID, ifName, err)
	}
	ips, err := s.readAttach(containerID, ifName)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var leases []store.Lease
	for _, ip := range ips {
		l, err := s.readLease(ip)
		switch {
		case errors.Is(err, store.ErrNotFound):
			// An intent left by an interrupted Reserve.
		case err != nil:
			return nil, err
		case l.ContainerID == containerID && l.IfName == ifName:
			leases = append(leases, l)
		}
	}
	return leases, nil
}

// NextFree walks the bitmap from from to to. It reads one chunk per 65,536
// addresses passed over, whatever the number of leases.
func (s *Store) NextFree(_ context.Context, from, to netip.Addr) (netip.Addr, error) {
	if err := s.requireLock("next free"); err != nil {
		return netip.Addr{}, err
	}
	if !from.IsValid() || from.BitLen() != to.BitLen() {
		return netip.Addr{}, fmt.Errorf("next free in %s-%s: bad bounds", from, to)
	}
	for a := from; a.IsValid() && a.Compare(to) <= 0; a = nextChunk(a) {
		base := chunkBase(a)
		c, err := s.chunk(base)
		if err != nil {
			return netip.Addr{}, err
		}
		last := chunkAddrs - 1
		if chunkBase(to) == base {
			last = chunkIndex(to)
		}
		if i, ok := c.firstZero(chunkIndex(a), last); ok {
			return chunkAddr(base, i), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free address in %s-%s: %w", from, to, store.ErrNotFound)
}

// Cursor returns the last address recorded for a range set.
func (s *Store) Cursor(_ context.Context, set string) (netip.Addr, error) {
	if err := s.requireLock("cursor"); err != nil {
		return netip.Addr{}, err
	}
	if err := store.ValidateName("range set name", set); err != nil {
		return netip.Addr{}, fmt.Errorf("cursor: %w", err)
	}
	b, err := safefs.ReadFile(filepath.Join(s.dir, cursorDir, set), maxCursorSize)
	if errors.Is(err, fs.ErrNotExist) {
		return netip.Addr{}, nil
	}
	if planted(err) {
		// A hint only: start the walk afresh; SetCursor replaces it.
		s.log.Warn("cursor is not a small regular file; ignoring it", "set", set, "err", err)
		return netip.Addr{}, nil
	}
	if err != nil {
		return netip.Addr{}, s.unavailable("read cursor "+set, err)
	}
	return store.ParseCursor(s.log, set, b), nil
}

// cursorSize is the size of a cursor file: the address padded with spaces
// to the longest text of an IPv6 address (39 bytes), and a newline. One
// size for every address lets SetCursor rewrite the file in place.
const cursorSize = 40

// SetCursor records the cursor of a range set. It is a hint, written
// without fsync: after a power cut the walk may resume from an older
// position, which costs a little fairness and nothing else. So it is
// rewritten in place, one pwrite(2) of the whole fixed-size record into
// the file already there, rather than through a new file: creating an
// inode for every ADD was a third of the IPAM's time on a filesystem that
// had seen many files come and go. A torn record (only a power cut can
// tear it) reads as unreadable, and the walk starts afresh. The first
// write, a file of another size (an older format) and a name that is not
// a plain file with one link (planted: written through, it would write
// elsewhere) are replaced whole instead.
func (s *Store) SetCursor(_ context.Context, set string, ip netip.Addr) error {
	if err := s.requireLock("set cursor"); err != nil {
		return err
	}
	if err := store.ValidateName("range set name", set); err != nil {
		return fmt.Errorf("set cursor: %w", err)
	}
	rec := fmt.Appendf(nil, "%-*s\n", cursorSize-1, ip)
	if len(rec) == cursorSize && s.rewriteCursor(set, rec) == nil {
		return nil
	}
	if err := s.writeFile(cursorDir, set, rec, false); err != nil {
		return s.unavailable("write cursor "+set, err)
	}
	return nil
}

// rewriteCursor writes rec over the cursor file of set, if that is a
// regular file of cursorSize bytes with one link.
func (s *Store) rewriteCursor(set string, rec []byte) error {
	f, err := safefs.Open(filepath.Join(s.dir, cursorDir, set), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close() //nolint:errcheck // written without fsync: close reports nothing more
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Nlink != 1 || fi.Size() != cursorSize {
		return errors.New("not a cursor file to rewrite in place")
	}
	_, err = f.WriteAt(rec, 0)
	return err
}

// leaseNames lists the addresses that have a lease file, without reading
// them.
func (s *Store) leaseNames() ([]netip.Addr, error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, leaseDir))
	if err != nil {
		return nil, s.unavailable("read lease directory", err)
	}
	ips := make([]netip.Addr, 0, len(entries))
	for _, e := range entries {
		if ip, err := netip.ParseAddr(e.Name()); err == nil && e.Type().IsRegular() {
			ips = append(ips, ip)
		}
	}
	return ips, nil
}

// List reads every lease, in address order.
func (s *Store) List(_ context.Context) ([]store.Lease, error) {
	if err := s.requireLock("list"); err != nil {
		return nil, err
	}
	names, err := s.leaseNames()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(names, netip.Addr.Compare)
	leases := make([]store.Lease, 0, len(names))
	var bad []error
	for _, ip := range names {
		l, err := s.readLease(ip)
		switch {
		case err == nil:
			leases = append(leases, l)
		case errors.Is(err, store.ErrNotFound):
			// Released between ReadDir and ReadFile: cannot happen under
			// the lock, harmless if it did.
		case errors.Is(err, store.ErrCorrupt):
			bad = append(bad, err)
		default:
			return nil, err
		}
	}
	return leases, errors.Join(bad...)
}
