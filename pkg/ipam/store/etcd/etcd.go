// Package etcd is the cluster-wide store of maclan-ipam: many hosts share
// one lease space in etcd, so a network that spans several hosts on one LAN
// never hands out an address twice.
//
// Keys, under <prefix>/<network>/:
//
//	lease/<family>-<hex>             one lease record (JSON) per address
//	attach/<containerID>=<if>/<...>  index: one empty-valued key per address of an attachment
//	cursor/<range set>               last address handed out in that set, cluster-wide
//
// <family>-<hex> is "4-" and 8 hex digits, or "6-" and 32: fixed width, so
// that key order is address order and NextFree is a range read that starts
// at its first candidate and never reads the leases below it.
//
// The arbiter is etcd's transaction, never a lock. Reserve writes the lease
// and its index key in one transaction that succeeds only if the lease key
// does not exist (create revision 0); a host that loses a race gets
// store.ErrReserved and the allocator tries the next candidate. Lock and
// Unlock are a local flock(2) per host and network: it keeps a host's own
// concurrent calls from racing each other for the same candidate (50
// parallel ADDs would otherwise cost some 1,250 failed transactions), and
// costs no etcd round trip. No lock is held across hosts, so a host that
// dies holds up no one.
//
// A lock section is the unit of durability. The keys Reserve writes are
// bound to an etcd lease (TTL Options.PendingTTL) and made permanent by
// Unlock, in one transaction that first checks that they are still bound to
// it. If etcd cannot be reached during the section, or the process dies
// before Unlock, they are not made permanent and etcd deletes them when the
// TTL runs out: a dual-stack ADD cut in half, or a transaction whose outcome
// the client never heard, leaves nothing behind. A section whose caller
// finds an attachment's own uncommitted keys (left by a call that died)
// adopts them, so a repeated ADD keeps the addresses it returns.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// maxTxnOps stays under etcd's default --max-txn-ops (128).
const maxTxnOps = 120

// Store is the etcd store of one network, seen from one host.
type Store struct {
	cli     *clientv3.Client
	opts    Options
	network string
	root    string // <prefix>/<network>/
	log     *slog.Logger

	lockFile *os.File
	locked   bool
	// Per lock section: the ID of the etcd lease that binds this
	// section's reservations (0 until granted), the keys to make permanent
	// at Unlock (with the lease each is bound to now), and whether etcd
	// failed to answer.
	sectionLease clientv3.LeaseID
	pending      map[string]clientv3.LeaseID
	cursors      map[string]netip.Addr // written with the commit
	records      map[string]record     // lease key → what was written, for the unsure journal
	tainted      bool
}

// record is a lease value written (or adopted) in this section and the
// index key that goes with it.
type record struct{ value, index string }

var _ store.Store = (*Store)(nil)

// New connects to etcd and opens the store of network. It fails with
// store.ErrUnavailable, naming the endpoints, if etcd does not answer
// within the dial timeout.
func New(network string, opts Options) (*Store, error) {
	if err := store.ValidateName("network name", network); err != nil {
		return nil, fmt.Errorf("open etcd store: %w", err)
	}
	if err := checkEndpoints(opts.Endpoints); err != nil {
		return nil, fmt.Errorf("open etcd store: %w", err)
	}
	if opts.Prefix == "" {
		opts.Prefix = store.DefaultEtcdPrefix
	}
	if err := store.ValidateEtcdPrefix(opts.Prefix); err != nil {
		return nil, fmt.Errorf("open etcd store: %w", err)
	}
	if opts.LockDir == "" {
		return nil, errors.New("open etcd store: no lock directory")
	}
	setDefault(&opts.DialTimeout, store.DefaultEtcdDialTimeout)
	setDefault(&opts.RequestTimeout, store.DefaultEtcdRequestTimeout)
	setDefault(&opts.LockTimeout, store.DefaultLockTimeout)
	setDefault(&opts.PendingTTL, DefaultPendingTTL)
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{opts: opts, network: network, root: opts.Prefix + "/" + network + "/", log: log}

	if err := os.MkdirAll(opts.LockDir, 0o700); err != nil {
		return nil, fmt.Errorf("open etcd store: lock directory: %w: %w", store.ErrUnavailable, err)
	}
	f, err := os.OpenFile(filepath.Join(opts.LockDir, network+".etcd.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open etcd store: lock file: %w: %w", store.ErrUnavailable, err)
	}
	s.lockFile = f

	cli, err := dial(opts)
	if err != nil {
		_ = f.Close() // the dial error is the one to report
		return nil, s.unavailable(fmt.Sprintf("connect within %s%s", opts.DialTimeout, dialHint(err, opts.TLS != nil)), err)
	}
	s.cli = cli
	return s, nil
}

// Root is the key prefix of the network, ending in '/'.
func (s *Store) Root() string { return s.root }

// Close drops the lock if held (uncommitted reservations then expire) and
// closes the connection.
func (s *Store) Close() error {
	var errs []error
	if s.lockFile != nil {
		errs = append(errs, s.lockFile.Close()) // also drops the flock
		s.lockFile, s.locked = nil, false
	}
	if s.cli != nil {
		errs = append(errs, s.cli.Close())
		s.cli = nil
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close etcd store of %q: %w", s.network, err)
	}
	return nil
}

// unavailable reports that etcd did not answer as store.ErrUnavailable,
// naming the endpoints. The client's error is kept as text only, so that no
// etcd or gRPC type leaks to callers. It taints the lock section: its
// reservations are not made permanent.
func (s *Store) unavailable(what string, err error) error {
	s.tainted = true
	cause := redactAll(err.Error(), s.opts.Endpoints)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		cause = "no answer in time (" + cause + ")"
	case errors.Is(err, context.Canceled):
		cause = "connection to etcd lost (" + cause + ")"
	}
	return fmt.Errorf("etcd at %s, network %q: %s: %w: %s", s.Endpoints(), s.network, what, store.ErrUnavailable, cause)
}

func (s *Store) requireLock(op string) error {
	if !s.locked {
		return fmt.Errorf("%s in network %q: store not locked", op, s.network)
	}
	return nil
}

// request gives one etcd request its time limit. If the client has lost
// its connection to every endpoint (etcd stopped or cut off), the request
// is cancelled at once rather than waiting out the limit for a reconnect:
// a queue of calls behind the host lock then fails fast, each with code 11.
func (s *Store) request(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	if conn := s.cli.ActiveConnection(); conn != nil {
		if st := conn.GetState(); st != connectivity.Ready && st != connectivity.Idle {
			cancel() // the request fails with context.Canceled; see unavailable
		}
	}
	return ctx, cancel
}
