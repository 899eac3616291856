// Package store defines the seam between the allocator and the backends
// that keep leases: the Store interface, the Lease record, the sentinel
// errors and WithLock. Backends live in sub-packages (disk, etcd; memstore
// for tests) and must pass the conformance suite in storetest.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"
)

// Lease is one address held by one attachment. An attachment is the CNI
// identity of an interface: container ID plus interface name.
type Lease struct {
	IP          netip.Addr
	ContainerID string
	IfName      string
	Created     time.Time
	// Conflict, when set, is the MAC address of a device on the LAN found
	// answering for IP (conflict detection): the lease then holds no
	// container but keeps the address from being handed out.
	Conflict string

	// Where and for whom the lease was taken, so that it can be given back
	// when its container is gone without a DEL (docs/ipam.md, "Lease
	// lifecycle"). Empty in leases written before these fields existed.
	Host  string // the host's identity: /etc/machine-id, else the hostname
	Boot  string // the kernel boot: /proc/sys/kernel/random/boot_id
	Netns string // the network namespace path the runtime gave (CNI_NETNS)
	// Workload names what runs in the container across re-creations
	// ("k8s/NAMESPACE/NAME", "mesos/NAME", or args.cni.workload);
	// WorkloadUID tells one incarnation from the next (K8S_POD_UID).
	Workload    string
	WorkloadUID string
	// Released, when set, marks a sticky hold: the workload's container
	// released the address at that time, and it is kept for the workload
	// (stickyFor) under the attachment StickyID(Workload, IfName).
	Released time.Time
}

// IsSticky reports whether l is a sticky hold rather than a container's
// lease.
func (l Lease) IsSticky() bool { return !l.Released.IsZero() }

// Store keeps leases. Every method except Lock, Unlock and Close must be
// called with the lock held; use WithLock.
//
// The store is the arbiter of who holds an address: Reserve is an atomic
// create-if-absent. NextFree is a fast hint over the same data and may
// name an address that turns out to be held; the caller then gets
// ErrReserved from Reserve and moves on, and the store corrects its hint.
type Store interface {
	// Lock takes the store's exclusive lock, honouring ctx and the
	// backend's own timeout; it returns ErrLockTimeout when they expire.
	Lock(ctx context.Context) error
	Unlock() error

	// Reserve records l, failing with ErrReserved if l.IP is held by
	// anyone, including l's own attachment. It records l under its
	// attachment so that GetByID and ReleaseByID need not search.
	Reserve(ctx context.Context, l Lease) error
	// Release removes the lease of ip whoever holds it; ErrNotFound if none.
	Release(ctx context.Context, ip netip.Addr) error
	// ReleaseByID removes every lease of the attachment and returns their
	// addresses. An unknown attachment is not an error: nil, nil.
	ReleaseByID(ctx context.Context, containerID, ifName string) ([]netip.Addr, error)

	// Get returns the lease of ip: ErrNotFound if none, ErrCorrupt if its
	// record cannot be trusted.
	Get(ctx context.Context, ip netip.Addr) (Lease, error)
	// GetByID returns the leases of the attachment (none: empty, nil).
	GetByID(ctx context.Context, containerID, ifName string) ([]Lease, error)
	// NextFree returns the lowest address in [from, to] (same family) that
	// the store believes unleased, or ErrNotFound. Its cost must not grow
	// with the number of leases below from.
	NextFree(ctx context.Context, from, to netip.Addr) (netip.Addr, error)

	// Cursor returns the last address handed out in the named range set
	// (invalid if none); SetCursor records it. The allocator resumes after
	// it, so that a just-released address is not reused while others are
	// free.
	Cursor(ctx context.Context, set string) (netip.Addr, error)
	SetCursor(ctx context.Context, set string, ip netip.Addr) error

	// List returns every lease it can read. Records it cannot decode are
	// left out and reported in the error (wrapping ErrCorrupt), so the
	// caller gets both what is known and what is broken.
	List(ctx context.Context) ([]Lease, error)

	Close() error
}

// Attachment is the CNI identity of an interface.
type Attachment struct{ ContainerID, IfName string }

// BulkReleaser is a Store that releases many leases at the cost of about
// one (the disk store syncs once instead of once per attachment). The
// leases must have been read under the lock still held (List); the index
// entries of their attachments go too, so it is for attachments whose
// every lease is given back. The sweep after a reboot uses it when the
// store has it, and ReleaseByID one by one otherwise.
type BulkReleaser interface {
	ReleaseLeases(ctx context.Context, leases []Lease) ([]netip.Addr, error)
}

// Restamper is a Store that can replace the record of a lease with the same
// address and attachment but new lifecycle fields (a container re-created
// under the same ID after a reboot, or in a new namespace: its lease must
// say so, or the lifecycle rules would take it back from the living
// container). Restamp fails with ErrNotFound if l.IP is no longer held by
// l's attachment.
type Restamper interface {
	Restamp(ctx context.Context, l Lease) error
}

// ConditionalReleaser is a Store shared by hosts that do not share its
// lock (etcd): ReleaseIf releases l.IP only while its record is still l as
// the caller read it, and returns ErrReserved otherwise. Callers that
// release what they listed (expired conflict records, sticky holds) use it
// when the store has it; a store whose lock every user takes (the
// directory store) needs no such check.
type ConditionalReleaser interface {
	ReleaseIf(ctx context.Context, l Lease) error
}

// Problem is one inconsistency found by a backend's Fsck.
type Problem struct {
	Kind     string // temp, stray, corrupt-lease, corrupt-index, stale-index, orphan-lease, bitmap, cursor
	Where    string // the record: a path relative to the store directory, or a key
	Detail   string
	Repaired bool
}

func (p Problem) String() string {
	s := fmt.Sprintf("%s %s: %s", p.Kind, p.Where, p.Detail)
	if p.Repaired {
		s += " (repaired)"
	}
	return s
}

// FsckReport is what a backend's Fsck found. Pending counts reservations
// not yet made permanent (etcd: a call in progress, or one that died and
// whose keys expire); they are not problems.
type FsckReport struct {
	Leases      int
	Attachments int
	Pending     int
	Problems    []Problem
}

// Checker is a store that checks its own records (and with repair fixes
// them); the lock must be held. Every backend is one: the operator tool's
// fsck and the doctor call it.
type Checker interface {
	Fsck(ctx context.Context, repair bool) (FsckReport, error)
}

// Importer is a store that adds many leases at once (migrate, and tests
// and benchmarks that need a large store); the lock must be held. A lease
// already held by the same attachment is skipped; one held by another is
// reported with ErrReserved and the rest imported. It returns how many of
// the leases given the store holds for their attachments.
type Importer interface {
	Import(ctx context.Context, leases []Lease) (int, error)
}

// WithLock runs fn with s locked. An error from Unlock is joined to fn's.
func WithLock(ctx context.Context, s Store, fn func() error) (err error) {
	if err := s.Lock(ctx); err != nil {
		return err
	}
	defer func() {
		if uerr := s.Unlock(); uerr != nil {
			err = errors.Join(err, fmt.Errorf("unlock: %w", uerr))
		}
	}()
	return fn()
}

// validID reports whether s has the CNI container ID syntax (SPEC.md,
// "Parameters": alphanumerics, hyphen, underscore, period, starting with an
// alphanumeric), which is also the network name syntax. Such names can
// never leave a directory. A loop, so that no regexp is compiled at init in
// every plugin process.
func validID(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return s != ""
}

// MaxIDLen bounds container IDs and network names so that the file names
// built from them stay well under the 255-byte limit of Linux file systems.
const MaxIDLen = 200

// ValidateName checks a container ID or network name; what names its
// subject ("container ID", "network name").
func ValidateName(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%s is empty", what)
	case len(s) > MaxIDLen:
		return fmt.Errorf("%s %.20q... is %d bytes long, more than %d", what, s, len(s), MaxIDLen)
	case !validID(s):
		return fmt.Errorf("%s %q may contain only letters, digits, '_', '.' and '-', and must start with a letter or digit", what, s)
	}
	return nil
}

// ValidateIfName checks an interface name the way Linux does (at most 15
// bytes, no '/', ':', whitespace, control bytes or NUL, not "." or "..").
func ValidateIfName(s string) error {
	if !utf8.ValidString(s) {
		// Records are JSON, which cannot carry it back unchanged.
		return fmt.Errorf("interface name %q is not valid UTF-8", s)
	}
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return fmt.Errorf("interface name %q must be 1 to 15 bytes and not \".\" or \"..\"", s)
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c == '/' || c == ':' || c == 0x7f {
			return fmt.Errorf("interface name %q contains a forbidden byte %q", s, c)
		}
	}
	return nil
}

// MaxTextLen bounds the free-text fields of a lease (host, boot, netns,
// workload, conflict): a path or a name, never a document.
const MaxTextLen = 4096

// ValidateText checks the free-text fields of a lease: valid UTF-8 (the
// records are JSON, which cannot carry anything else back unchanged) and at
// most MaxTextLen bytes. Control characters are stored as given; whatever
// shows them (maclan-ipam ls) escapes them.
func (l Lease) ValidateText() error {
	for _, f := range []struct{ what, s string }{
		{"conflict", l.Conflict}, {"host", l.Host}, {"boot", l.Boot},
		{"netns", l.Netns}, {"workload", l.Workload}, {"workload UID", l.WorkloadUID},
	} {
		if len(f.s) > MaxTextLen {
			return fmt.Errorf("lease %s: %s is %d bytes long, more than %d", l.IP, f.what, len(f.s), MaxTextLen)
		}
		if !utf8.ValidString(f.s) {
			return fmt.Errorf("lease %s: %s %q is not valid UTF-8", l.IP, f.what, f.s)
		}
	}
	return nil
}

// ForReserve checks a lease that a backend is asked to Reserve (a plain
// address: no zone, not IPv4-mapped; a valid attachment; text that the
// records carry back unchanged) and returns it with Created set (now, if
// zero).
func ForReserve(l Lease) (Lease, error) {
	if !l.IP.IsValid() || l.IP.Zone() != "" || l.IP.Is4In6() {
		return l, fmt.Errorf("reserve %s: not a plain unicast address", l.IP)
	}
	if err := ValidateAttachment(l.ContainerID, l.IfName); err != nil {
		return l, fmt.Errorf("reserve %s: %w", l.IP, err)
	}
	if err := l.ValidateText(); err != nil {
		return l, fmt.Errorf("reserve: %w", err)
	}
	if l.Created.IsZero() {
		l.Created = time.Now()
	}
	return l, nil
}

// ValidateAttachment checks both halves of an attachment identity.
func ValidateAttachment(containerID, ifName string) error {
	return errors.Join(ValidateName("container ID", containerID), ValidateIfName(ifName))
}

// ParseCursor decodes a range set's cursor as a store keeps it (the address
// in text, maybe with a newline). A cursor is only a hint: an unreadable one
// is logged and the walk starts from the first address (the zero Addr).
func ParseCursor(log *slog.Logger, set string, b []byte) netip.Addr {
	ip, err := netip.ParseAddr(strings.TrimSpace(string(b)))
	if err != nil {
		log.Warn("cursor unreadable; starting from the first address", "set", set, "err", err)
		return netip.Addr{}
	}
	return ip
}
