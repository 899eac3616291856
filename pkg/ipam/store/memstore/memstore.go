// Package memstore is a store.Store kept in memory: the allocator's tests
// run on it without touching a disk, and it passes the same conformance
// suite (storetest) as the disk and etcd stores. It is not for production:
// its leases die with the process.
package memstore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// Backend is one store's data. Every handle from Open shares it, as every
// process opening a disk store shares its files.
type Backend struct {
	lock    chan struct{} // holds a token while some handle has the lock
	leases  map[netip.Addr]store.Lease
	byID    map[attachment][]netip.Addr
	cursors map[string]netip.Addr
}

type attachment struct{ containerID, ifName string }

// New returns an empty store.
func New() *Backend {
	return &Backend{
		lock:    make(chan struct{}, 1),
		leases:  map[netip.Addr]store.Lease{},
		byID:    map[attachment][]netip.Addr{},
		cursors: map[string]netip.Addr{},
	}
}

// Open returns a new handle on the store.
func (b *Backend) Open() *Handle { return &Handle{b: b} }

// Handle is one user's view of the store, with its own lock state.
type Handle struct {
	b      *Backend
	locked bool
}

var errNotLocked = errors.New("memstore: the store lock is not held")

func (h *Handle) need() error {
	if !h.locked {
		return errNotLocked
	}
	return nil
}

// Lock waits for the store's lock until ctx ends (ErrLockTimeout).
func (h *Handle) Lock(ctx context.Context) error {
	if h.locked {
		return errors.New("memstore: lock already held by this handle")
	}
	select {
	case h.b.lock <- struct{}{}:
		h.locked = true
		return nil
	case <-ctx.Done():
		return fmt.Errorf("memstore: %w", store.ErrLockTimeout)
	}
}

// Unlock releases the lock.
func (h *Handle) Unlock() error {
	if err := h.need(); err != nil {
		return err
	}
	h.locked = false
	<-h.b.lock
	return nil
}

// Reserve records l unless its address is held.
func (h *Handle) Reserve(_ context.Context, l store.Lease) error {
	if err := h.need(); err != nil {
		return err
	}
	l, err := store.ForReserve(l)
	if err != nil {
		return err
	}
	if _, held := h.b.leases[l.IP]; held {
		return fmt.Errorf("%s: %w", l.IP, store.ErrReserved)
	}
	h.b.leases[l.IP] = l
	at := attachment{l.ContainerID, l.IfName}
	h.b.byID[at] = append(h.b.byID[at], l.IP)
	return nil
}

// Restamp replaces the record of l.IP, held by l's attachment, with l.
func (h *Handle) Restamp(_ context.Context, l store.Lease) error {
	if err := h.need(); err != nil {
		return err
	}
	old, ok := h.b.leases[l.IP]
	if !ok || old.ContainerID != l.ContainerID || old.IfName != l.IfName {
		return fmt.Errorf("%s: %w", l.IP, store.ErrNotFound)
	}
	h.b.leases[l.IP] = l
	return nil
}

// Release removes the lease of ip.
func (h *Handle) Release(_ context.Context, ip netip.Addr) error {
	if err := h.need(); err != nil {
		return err
	}
	l, ok := h.b.leases[ip]
	if !ok {
		return fmt.Errorf("%s: %w", ip, store.ErrNotFound)
	}
	delete(h.b.leases, ip)
	at := attachment{l.ContainerID, l.IfName}
	h.b.byID[at] = slices.DeleteFunc(h.b.byID[at], func(a netip.Addr) bool { return a == ip })
	if len(h.b.byID[at]) == 0 {
		delete(h.b.byID, at)
	}
	return nil
}

// ReleaseByID removes every lease of the attachment.
func (h *Handle) ReleaseByID(ctx context.Context, containerID, ifName string) ([]netip.Addr, error) {
	if err := h.need(); err != nil {
		return nil, err
	}
	if err := store.ValidateAttachment(containerID, ifName); err != nil {
		return nil, err
	}
	ips := slices.Clone(h.b.byID[attachment{containerID, ifName}])
	for _, ip := range ips {
		if err := h.Release(ctx, ip); err != nil {
			return nil, err
		}
	}
	return ips, nil
}

// Get returns the lease of ip.
func (h *Handle) Get(_ context.Context, ip netip.Addr) (store.Lease, error) {
	if err := h.need(); err != nil {
		return store.Lease{}, err
	}
	l, ok := h.b.leases[ip]
	if !ok {
		return store.Lease{}, fmt.Errorf("%s: %w", ip, store.ErrNotFound)
	}
	return l, nil
}

// GetByID returns the leases of the attachment.
func (h *Handle) GetByID(_ context.Context, containerID, ifName string) ([]store.Lease, error) {
	if err := h.need(); err != nil {
		return nil, err
	}
	var out []store.Lease
	for _, ip := range h.b.byID[attachment{containerID, ifName}] {
		out = append(out, h.b.leases[ip])
	}
	return out, nil
}

// NextFree returns the lowest unleased address in [from, to]. It walks
// the addresses, which is fine for the small ranges of tests.
func (h *Handle) NextFree(_ context.Context, from, to netip.Addr) (netip.Addr, error) {
	if err := h.need(); err != nil {
		return netip.Addr{}, err
	}
	for ip := from; ip.IsValid() && ip.Compare(to) <= 0; ip = ip.Next() {
		if _, held := h.b.leases[ip]; !held {
			return ip, nil
		}
	}
	return netip.Addr{}, store.ErrNotFound
}

// Cursor returns the set's last handed-out address.
func (h *Handle) Cursor(_ context.Context, set string) (netip.Addr, error) {
	if err := h.need(); err != nil {
		return netip.Addr{}, err
	}
	return h.b.cursors[set], nil
}

// SetCursor records the set's last handed-out address.
func (h *Handle) SetCursor(_ context.Context, set string, ip netip.Addr) error {
	if err := h.need(); err != nil {
		return err
	}
	h.b.cursors[set] = ip
	return nil
}

// List returns every lease, by address.
func (h *Handle) List(context.Context) ([]store.Lease, error) {
	if err := h.need(); err != nil {
		return nil, err
	}
	out := make([]store.Lease, 0, len(h.b.leases))
	for _, l := range h.b.leases {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b store.Lease) int { return a.IP.Compare(b.IP) })
	return out, nil
}

// Close releases the lock if this handle holds it.
func (h *Handle) Close() error {
	if h.locked {
		return h.Unlock()
	}
	return nil
}
