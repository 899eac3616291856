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
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	"github.com/maclan-cni/maclan/pkg/flock"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// Defaults of Options.
const (
	DefaultPrefix         = "/maclan"
	DefaultDialTimeout    = 2 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	DefaultLockTimeout    = 10 * time.Second
	DefaultPendingTTL     = 15 * time.Second
)

// maxTxnOps stays under etcd's default --max-txn-ops (128).
const maxTxnOps = 120

// Options configure a Store.
type Options struct {
	// Endpoints are etcd client URLs (http://host:2379, https://...).
	Endpoints []string
	// Prefix is the key prefix of every network (default DefaultPrefix).
	Prefix string
	// TLS, if set, is used for https endpoints.
	TLS *tls.Config
	// DialTimeout bounds the connection to etcd (default 2 s); a store
	// that cannot connect in time fails with store.ErrUnavailable.
	DialTimeout time.Duration
	// RequestTimeout bounds each request (default 5 s).
	RequestTimeout time.Duration
	// LockDir holds the per-host lock file <LockDir>/<network>.etcd.lock.
	LockDir string
	// LockTimeout bounds Lock (default DefaultLockTimeout).
	LockTimeout time.Duration
	// PendingTTL is how long reservations not yet made permanent survive
	// a caller that vanished (default 15 s; etcd rounds it up to its
	// minimum, about 2 s).
	PendingTTL time.Duration
	// Log receives the few lines worth reading; nil discards them. The
	// lines do not name the network: the caller's logger does.
	Log *slog.Logger
}

// Store is the etcd store of one network, seen from one host.
type Store struct {
	cli     *clientv3.Client
	opts    Options
	network string
	root    string // <prefix>/<network>/
	log     *slog.Logger

	lockFile *os.File
	locked   bool
	// Per lock section: the etcd lease that binds this section's
	// reservations, the keys to make permanent at Unlock (with the lease
	// each is bound to now), and whether etcd failed to answer.
	ttl     clientv3.LeaseID
	pending map[string]clientv3.LeaseID
	cursors map[string]netip.Addr // written with the commit
	records map[string]record     // lease key → what was written, for the unsure journal
	tainted bool
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
		opts.Prefix = DefaultPrefix
	}
	if err := ValidatePrefix(opts.Prefix); err != nil {
		return nil, fmt.Errorf("open etcd store: %w", err)
	}
	if opts.LockDir == "" {
		return nil, errors.New("open etcd store: no lock directory")
	}
	setDefault(&opts.DialTimeout, DefaultDialTimeout)
	setDefault(&opts.RequestTimeout, DefaultRequestTimeout)
	setDefault(&opts.LockTimeout, DefaultLockTimeout)
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

// dial connects to etcd, blocking until connected or DialTimeout, so that
// an unreachable etcd is reported at once and in one place.
func dial(opts Options) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   opts.Endpoints,
		TLS:         opts.TLS,
		DialTimeout: opts.DialTimeout,
		// Blocking, and returning the last connection error rather than
		// only "deadline exceeded": a TLS handshake that etcd refuses (or
		// whose certificate the client refuses) is then named.
		DialOptions:          []grpc.DialOption{grpc.WithReturnConnectionError()}, //nolint:staticcheck // the etcd client dials with DialContext
		Logger:               zap.NewNop(),
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: opts.DialTimeout,
	})
}

// dialHint names the likely cause of a failed dial, from the text gRPC
// gives (its error types are internal): a TLS handshake failure, or etcd
// closing the connection at once, which is how etcd refuses a client
// certificate under TLS 1.3 (the client learns of it only on its first
// write) and how a TLS listener answers a plain-text client.
func dialHint(err error, secure bool) string {
	msg := err.Error()
	closed := strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset by peer") || strings.Contains(msg, "server preface: EOF")
	switch {
	case strings.Contains(msg, "handshake failed") || strings.Contains(msg, "x509: ") || strings.Contains(msg, "tls: "):
		return " (TLS handshake failed: check the CA, client certificate and key against etcd's)"
	case closed && secure:
		return " (etcd closed the connection, as it does when it refuses the client certificate: check the client certificate and key)"
	case closed:
		return " (etcd closed the connection, as a TLS listener does to plain HTTP: if etcd serves TLS, use https:// endpoints and a TLS configuration)"
	}
	return ""
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// ValidatePrefix checks a key prefix: it starts with '/', does not end
// with one, and holds no empty segment, whitespace or control byte.
func ValidatePrefix(p string) error {
	switch {
	case !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//"):
		return fmt.Errorf("key prefix %q must start with '/', not end with one, and have no empty segment", p)
	case strings.IndexFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return fmt.Errorf("key prefix %q contains whitespace or a control byte", p)
	}
	return nil
}

// Network is the network the store belongs to.
func (s *Store) Network() string { return s.network }

// Endpoints names the etcd endpoints, as error messages do, without any
// credentials (New refuses them; this is a second line).
func (s *Store) Endpoints() string {
	eps := make([]string, len(s.opts.Endpoints))
	for i, ep := range s.opts.Endpoints {
		eps[i] = redactEndpoint(ep)
	}
	return strings.Join(eps, ",")
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

// Keys.

// addrKey is the fixed-width, order-preserving form of an address.
func addrKey(ip netip.Addr) string {
	if ip.Is4() {
		b := ip.As4()
		return "4-" + hex.EncodeToString(b[:])
	}
	b := ip.As16()
	return "6-" + hex.EncodeToString(b[:])
}

// parseAddrKey is the inverse of addrKey: it accepts only what addrKey
// writes (lowercase hex, fixed width), so that one address has one key.
func parseAddrKey(k string) (netip.Addr, bool) {
	ip, ok := parseAddrHex(k)
	return ip, ok && addrKey(ip) == k
}

func parseAddrHex(k string) (netip.Addr, bool) {
	fam, h, ok := strings.Cut(k, "-")
	if !ok {
		return netip.Addr{}, false
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return netip.Addr{}, false
	}
	switch {
	case fam == "4" && len(b) == 4:
		return netip.AddrFrom4([4]byte(b)), true
	case fam == "6" && len(b) == 16:
		a := netip.AddrFrom16([16]byte(b))
		return a, !a.Is4In6()
	}
	return netip.Addr{}, false
}

func (s *Store) leasePrefix() string           { return s.root + "lease/" }
func (s *Store) leaseKey(ip netip.Addr) string { return s.leasePrefix() + addrKey(ip) }
func (s *Store) attachRoot() string            { return s.root + "attach/" }
func (s *Store) attachPrefix(containerID, ifName string) string {
	// A container ID cannot contain '=' or '/' and an interface name
	// cannot contain '/', so this prefix names exactly one attachment.
	return s.attachRoot() + containerID + "=" + ifName + "/"
}

func (s *Store) attachKey(containerID, ifName string, ip netip.Addr) string {
	return s.attachPrefix(containerID, ifName) + addrKey(ip)
}
func (s *Store) cursorKey(set string) string { return s.root + "cursor/" + set }

// mvccKV is a key with its revisions, as etcd returns it.
type mvccKV = mvccpb.KeyValue

func unflock(f *os.File) error { return syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }

func validAddr(ip netip.Addr) bool { return ip.IsValid() && ip.Zone() == "" && !ip.Is4In6() }

// Lock takes the per-host lock of the network: flock(2) on a local file,
// polled until ctx is done or Options.LockTimeout has passed.
func (s *Store) Lock(ctx context.Context) error {
	if s.locked {
		return fmt.Errorf("lock network %q: already held by this store", s.network)
	}
	if s.lockFile == nil {
		return fmt.Errorf("lock network %q: store closed", s.network)
	}
	deadline := time.Now().Add(s.opts.LockTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	err := flock.Wait(s.lockFile, deadline, ctx.Done())
	if errors.Is(err, flock.ErrTimeout) {
		return fmt.Errorf("lock %s after %s: %w", s.lockFile.Name(), s.opts.LockTimeout, store.ErrLockTimeout)
	}
	if err != nil {
		return fmt.Errorf("lock %s: %w: %w", s.lockFile.Name(), store.ErrUnavailable, err)
	}
	s.locked, s.ttl, s.pending, s.cursors, s.records, s.tainted = true, 0, map[string]clientv3.LeaseID{}, map[string]netip.Addr{}, map[string]record{}, false
	s.replayJournal(ctx)
	return nil
}

// Unlock makes the section's reservations permanent, unless etcd failed
// to answer during the section, and releases the lock. Reservations that
// are not made permanent expire after PendingTTL.
func (s *Store) Unlock() error {
	if !s.locked {
		return fmt.Errorf("unlock network %q: not locked", s.network)
	}
	var err error
	switch {
	case len(s.pending) == 0 && len(s.cursors) == 0:
	case s.tainted:
		err = s.drop()
	default:
		err = s.commit()
	}
	s.locked, s.ttl, s.pending, s.cursors, s.records = false, 0, nil, nil, nil
	if uerr := unflock(s.lockFile); uerr != nil {
		err = errors.Join(err, fmt.Errorf("unlock %s: %w: %w", s.lockFile.Name(), store.ErrUnavailable, uerr))
	}
	return err
}

// commit detaches the pending keys from their etcd leases, in
// transactions that check first that each is still bound to the lease it
// was written with, and then writes the cursors. A lease and its index key
// always travel in the same transaction. An ADD takes one transaction; an
// attachment with many range sets takes as many as etcd's limit on
// operations requires (each carries at least one pair or cursor, so the
// loop ends).
func (s *Store) commit() error {
	keys := make([]string, 0, len(s.pending))
	for k := range s.pending {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	pairs := pairUp(keys)
	sets := make([]string, 0, len(s.cursors))
	for set := range s.cursors {
		sets = append(sets, set)
	}
	slices.Sort(sets)
	for len(pairs) > 0 || len(sets) > 0 {
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		n := 0
		for n < len(pairs) && (n == 0 || len(ops)+len(pairs[n]) <= maxTxnOps) {
			for _, k := range pairs[n] {
				cmps = append(cmps, clientv3.Compare(clientv3.LeaseValue(k), "=", int64(s.pending[k])))
				ops = append(ops, clientv3.OpPut(k, "", clientv3.WithIgnoreValue()))
			}
			n++
		}
		c := 0
		for n == len(pairs) && c < len(sets) && len(ops) < maxTxnOps {
			ops = append(ops, clientv3.OpPut(s.cursorKey(sets[c]), s.cursors[sets[c]].String()))
			c++
		}
		if err := s.commitTxn(cmps, ops, pairs); err != nil {
			return err
		}
		pairs, sets = pairs[n:], sets[c:]
	}
	return nil
}

// commitTxn runs one transaction of commit; pairs are the keys not yet
// made permanent, for the unsure journal.
func (s *Store) commitTxn(cmps []clientv3.Cmp, ops []clientv3.Op, pairs [][]string) error {
	ctx, cancel := s.request(context.Background())
	sent := ctx.Err() == nil // else the connection was known lost: not sent
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	cancel()
	if err != nil {
		err = s.unavailable("make reservations permanent within "+s.opts.RequestTimeout.String()+" (they expire in "+s.opts.PendingTTL.String()+")", err)
		if sent {
			var rest []string
			for _, p := range pairs {
				rest = append(rest, p...)
			}
			if jerr := s.noteUnsure(rest); jerr != nil {
				err = errors.Join(err, fmt.Errorf("note the unsure commit in %s (a DEL of the attachment releases it): %w", s.journalPath(), jerr))
			}
		}
		return err
	}
	if !resp.Succeeded {
		// Only an expiry (a section slower than PendingTTL) or a hand
		// edit gets here; the address may now be someone else's. The
		// cursors, hints only, were not written either.
		return fmt.Errorf("etcd at %s, network %q: reservations expired before they were made permanent: %w", s.Endpoints(), s.network, store.ErrUnavailable)
	}
	return nil
}

// pairUp groups each lease key with the index key of the same address
// (both end in the address), so that a commit split over several
// transactions never separates them.
func pairUp(keys []string) [][]string {
	byAddr := map[string][]string{}
	var order []string
	for _, k := range keys {
		a := k[strings.LastIndexByte(k, '/')+1:]
		if _, ok := byAddr[a]; !ok {
			order = append(order, a)
		}
		byAddr[a] = append(byAddr[a], k)
	}
	out := make([][]string, 0, len(order))
	for _, a := range order {
		out = append(out, byAddr[a])
	}
	return out
}

// drop revokes the section's etcd lease, deleting its reservations now
// rather than at expiry; if etcd is still away they expire by themselves.
func (s *Store) drop() error {
	err := fmt.Errorf("etcd at %s, network %q: etcd did not answer during the call; its reservations were not kept: %w", s.Endpoints(), s.network, store.ErrUnavailable)
	if s.ttl == 0 {
		return err
	}
	ctx, cancel := s.request(context.Background())
	defer cancel()
	if _, rerr := s.cli.Revoke(ctx, s.ttl); rerr != nil {
		s.log.Info("could not revoke the etcd lease of dropped reservations; they expire by themselves", "ttl", s.opts.PendingTTL, "err", rerr)
	}
	return err
}

// grant returns the section's etcd lease, granting it on first use.
func (s *Store) grant(ctx context.Context) (clientv3.LeaseID, error) {
	if s.ttl != 0 {
		return s.ttl, nil
	}
	ctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.cli.Grant(ctx, int64((s.opts.PendingTTL+time.Second-1)/time.Second))
	if err != nil {
		return 0, s.unavailable("grant a lease for new reservations", err)
	}
	s.ttl = resp.ID
	return s.ttl, nil
}

// Reserve records l in one transaction: the lease key, created only if
// absent, and its index key.
func (s *Store) Reserve(ctx context.Context, l store.Lease) error {
	if err := s.requireLock("reserve"); err != nil {
		return err
	}
	if !validAddr(l.IP) {
		return fmt.Errorf("reserve %s: not a plain unicast address", l.IP)
	}
	if err := store.ValidateAttachment(l.ContainerID, l.IfName); err != nil {
		return fmt.Errorf("reserve %s: %w", l.IP, err)
	}
	if err := l.ValidateText(); err != nil {
		return fmt.Errorf("reserve: %w", err)
	}
	if l.Created.IsZero() {
		l.Created = time.Now()
	}
	id, err := s.grant(ctx)
	if err != nil {
		return fmt.Errorf("reserve %s: %w", l.IP, err)
	}
	lk, ik := s.leaseKey(l.IP), s.attachKey(l.ContainerID, l.IfName, l.IP)
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(lk), "=", 0)).
		Then(clientv3.OpPut(lk, string(encodeLease(l)), clientv3.WithLease(id)), clientv3.OpPut(ik, "", clientv3.WithLease(id))).
		Else(clientv3.OpGet(lk)).
		Commit()
	if err != nil {
		return s.unavailable("reserve "+l.IP.String(), err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 { // released again in between
			return fmt.Errorf("reserve %s: %w", l.IP, store.ErrReserved)
		}
		held, derr := decodeLease(l.IP, kvs[0].Value)
		if derr != nil {
			return fmt.Errorf("reserve %s: %w: %w", l.IP, store.ErrReserved, derr)
		}
		return fmt.Errorf("reserve %s: held by container %s interface %s: %w", l.IP, held.ContainerID, held.IfName, store.ErrReserved)
	}
	s.pending[lk], s.pending[ik] = id, id
	s.records[lk] = record{value: string(encodeLease(l)), index: ik}
	return nil
}

// Release removes the lease of ip whoever holds it, with its index key, if
// it has not changed since it was read.
func (s *Store) Release(ctx context.Context, ip netip.Addr) error {
	if err := s.requireLock("release"); err != nil {
		return err
	}
	if !validAddr(ip) {
		return fmt.Errorf("release %s: not a plain unicast address", ip)
	}
	lk := s.leaseKey(ip)
	for range 5 { // a concurrent change of the same lease is rare; retry a few times
		rctx, cancel := s.request(ctx)
		resp, err := s.cli.Get(rctx, lk)
		cancel()
		if err != nil {
			return s.unavailable("release "+ip.String(), err)
		}
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("release %s: %w", ip, store.ErrNotFound)
		}
		kv := resp.Kvs[0]
		ops := []clientv3.Op{clientv3.OpDelete(lk)}
		var ik string
		if l, err := decodeLease(ip, kv.Value); err == nil {
			ik = s.attachKey(l.ContainerID, l.IfName, ip)
			ops = append(ops, clientv3.OpDelete(ik))
		} // a damaged record: its holder, and so its index key, is unknown (fsck finds it)
		rctx, cancel = s.request(ctx)
		tresp, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(lk), "=", kv.ModRevision)).Then(ops...).Commit()
		cancel()
		if err != nil {
			return s.unavailable("release "+ip.String(), err)
		}
		if tresp.Succeeded {
			delete(s.pending, lk)
			delete(s.pending, ik)
			return nil
		}
	}
	return fmt.Errorf("release %s: the lease kept changing under us: %w", ip, store.ErrUnavailable)
}

// attachment checks the lock and the names for op on an attachment, and
// returns how messages name it and the prefix of its index keys.
func (s *Store) attachment(op, containerID, ifName string) (subject, prefix string, err error) {
	if err := s.requireLock(op); err != nil {
		return "", "", err
	}
	if err := store.ValidateAttachment(containerID, ifName); err != nil {
		return "", "", fmt.Errorf("%s %s/%s: %w", op, containerID, ifName, err)
	}
	return containerID + "/" + ifName, s.attachPrefix(containerID, ifName), nil
}

// releaseChunk is how many addresses one release transaction carries: a
// compare and two deletes each, under etcd's limit on operations.
const releaseChunk = maxTxnOps / 2

// indexEntry is an index key of an attachment and the address it names.
type indexEntry struct {
	kv *mvccKV
	ip netip.Addr
}

// ReleaseByID removes the attachment's leases through its index keys, a
// chunk of releaseChunk addresses per transaction: an attachment holds one
// address per range set, and nothing bounds their number. A lease whose
// create revision equals its index key's was written with it in one
// transaction and so is the attachment's: the common case takes one read
// and one transaction. Otherwise (a lease re-indexed by fsck) the chunk's
// leases are read and those the attachment holds are deleted. Keys under
// the attachment's prefix that are not index keys are not maclan's and
// stay. Each chunk released deletes its index keys, so the loop ends: at
// most one round per chunk, and five rounds lost to concurrent changes.
func (s *Store) ReleaseByID(ctx context.Context, containerID, ifName string) ([]netip.Addr, error) {
	subject, _, err := s.attachment("release", containerID, ifName)
	if err != nil {
		return nil, err
	}
	var released []netip.Addr
	for lost := 0; lost < 5; { // a concurrent change of the same keys is rare; retry a few times
		index, err := s.readIndex(ctx, containerID, ifName)
		if err != nil {
			return nil, fmt.Errorf("release %s: %w", subject, err)
		}
		if len(index) == 0 {
			return released, nil
		}
		chunk := index[:min(len(index), releaseChunk)]
		ips, done, err := s.releaseFast(ctx, chunk)
		if err == nil && !done {
			ips, done, err = s.releaseSlow(ctx, containerID, ifName, chunk)
		}
		if err != nil {
			return nil, fmt.Errorf("release %s: %w", subject, err)
		}
		if !done {
			lost++
			continue
		}
		for _, e := range chunk {
			delete(s.pending, string(e.kv.Key))
		}
		for _, ip := range ips {
			delete(s.pending, s.leaseKey(ip))
		}
		released = append(released, ips...)
	}
	return nil, fmt.Errorf("release %s: the index kept changing under us: %w", subject, store.ErrUnavailable)
}

// readIndex reads the index keys of an attachment, all at one revision,
// leaving out keys under its prefix that are not index keys.
func (s *Store) readIndex(ctx context.Context, containerID, ifName string) ([]indexEntry, error) {
	prefix := s.attachPrefix(containerID, ifName)
	kvs, _, err := s.rangeAll(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var index []indexEntry
	for _, kv := range kvs {
		if ip, ok := parseAddrKey(strings.TrimPrefix(string(kv.Key), prefix)); ok {
			index = append(index, indexEntry{kv, ip})
		}
	}
	return index, nil
}

// releaseFast deletes the index keys and the leases written with them, if
// every lease still has its index key's create revision.
func (s *Store) releaseFast(ctx context.Context, chunk []indexEntry) ([]netip.Addr, bool, error) {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	ips := make([]netip.Addr, 0, len(chunk))
	for _, e := range chunk {
		lk := s.leaseKey(e.ip)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(lk), "=", e.kv.CreateRevision))
		ops = append(ops, clientv3.OpDelete(string(e.kv.Key)), clientv3.OpDelete(lk))
		ips = append(ips, e.ip)
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.cli.Txn(rctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return nil, false, s.unavailable("release", err)
	}
	return ips, resp.Succeeded, nil
}

// releaseSlow reads the leases the chunk names and deletes, with the
// chunk's index keys, those the attachment holds, if none changed since
// read.
func (s *Store) releaseSlow(ctx context.Context, containerID, ifName string, chunk []indexEntry) ([]netip.Addr, bool, error) {
	named := make([]netip.Addr, len(chunk))
	for i, e := range chunk {
		named[i] = e.ip
	}
	kvs, err := s.getLeases(ctx, named)
	if err != nil {
		return nil, false, err
	}
	var ips []netip.Addr
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for i, kv := range kvs {
		lk := s.leaseKey(named[i])
		ops = append(ops, clientv3.OpDelete(string(chunk[i].kv.Key)))
		if kv == nil {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(lk), "=", 0))
			continue
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(lk), "=", kv.ModRevision))
		if l, err := decodeLease(named[i], kv.Value); err == nil && l.ContainerID == containerID && l.IfName == ifName {
			ips = append(ips, named[i])
			ops = append(ops, clientv3.OpDelete(lk))
		} // someone else's, or damaged (left for fsck)
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.cli.Txn(rctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return nil, false, s.unavailable("release", err)
	}
	return ips, resp.Succeeded, nil
}

// getLeases reads the lease keys of ips, nil where a lease is absent: in
// transactions of at most maxTxnOps reads, all at the revision of the
// first.
func (s *Store) getLeases(ctx context.Context, ips []netip.Addr) ([]*mvccKV, error) {
	out := make([]*mvccKV, 0, len(ips))
	rev := int64(0)
	for len(out) < len(ips) {
		part := ips[len(out):min(len(ips), len(out)+maxTxnOps)]
		gets := make([]clientv3.Op, len(part))
		for i, ip := range part {
			gets[i] = clientv3.OpGet(s.leaseKey(ip), clientv3.WithRev(rev))
		}
		rctx, cancel := s.request(ctx)
		resp, err := s.cli.Txn(rctx).Then(gets...).Commit()
		cancel()
		if err != nil {
			return nil, s.unavailable("read leases", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, r := range resp.Responses {
			var kv *mvccKV
			if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
				kv = kvs[0]
			}
			out = append(out, kv)
		}
	}
	return out, nil
}

// Get returns the lease of ip.
func (s *Store) Get(ctx context.Context, ip netip.Addr) (store.Lease, error) {
	if err := s.requireLock("get"); err != nil {
		return store.Lease{}, err
	}
	if !validAddr(ip) {
		return store.Lease{}, fmt.Errorf("get %s: not a plain unicast address", ip)
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.leaseKey(ip))
	if err != nil {
		return store.Lease{}, s.unavailable("get "+ip.String(), err)
	}
	if len(resp.Kvs) == 0 {
		return store.Lease{}, fmt.Errorf("lease %s: %w", ip, store.ErrNotFound)
	}
	return decodeLease(ip, resp.Kvs[0].Value)
}

// GetByID returns the leases of an attachment: a prefix read of its
// index keys and a read of the leases they name. Keys of the attachment
// that a call which died left uncommitted are adopted: this section makes
// them permanent.
func (s *Store) GetByID(ctx context.Context, containerID, ifName string) ([]store.Lease, error) {
	subject, _, err := s.attachment("get", containerID, ifName)
	if err != nil {
		return nil, err
	}
	index, err := s.readIndex(ctx, containerID, ifName)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", subject, err)
	}
	if len(index) == 0 {
		return nil, nil
	}
	ips := make([]netip.Addr, len(index))
	for i, e := range index {
		ips[i] = e.ip
	}
	kvs, err := s.getLeases(ctx, ips)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", subject, err)
	}
	var leases []store.Lease
	for i, kv := range kvs {
		if kv == nil {
			continue // a stale index key (fsck reports it)
		}
		l, err := decodeLease(ips[i], kv.Value)
		if err != nil {
			return nil, err
		}
		if l.ContainerID != containerID || l.IfName != ifName {
			continue
		}
		leases = append(leases, l)
		if kv.Lease != 0 && clientv3.LeaseID(kv.Lease) != s.ttl {
			ik := string(index[i].kv.Key)
			s.pending[string(kv.Key)], s.pending[ik] = clientv3.LeaseID(kv.Lease), clientv3.LeaseID(index[i].kv.Lease)
			s.records[string(kv.Key)] = record{value: string(kv.Value), index: ik}
		}
	}
	return leases, nil
}

// nextFreePage is how many keys NextFree reads at a time.
const nextFreePage = 256

// NextFree returns the lowest address in [from, to] without a lease key:
// a keys-only range read from from's key, so the leases below from are
// never read. It pages through a run of consecutive leases.
//
// Keys come in order, and the lease keys are in address order, so the
// first key read that is past want's own key shows want to be free. Keys
// that are not lease keys (another program's, between two lease keys) are
// passed over. Each page starts after the last key of the one before, so
// every read moves on, whatever the keys: the loop ends after at most one
// read per page of keys in the range.
func (s *Store) NextFree(ctx context.Context, from, to netip.Addr) (netip.Addr, error) {
	if err := s.requireLock("next free"); err != nil {
		return netip.Addr{}, err
	}
	if !validAddr(from) || !validAddr(to) || from.BitLen() != to.BitLen() {
		return netip.Addr{}, fmt.Errorf("next free in %s-%s: bad bounds", from, to)
	}
	if to.Less(from) {
		return netip.Addr{}, fmt.Errorf("no free address in %s-%s: %w", from, to, store.ErrNotFound)
	}
	end := s.leaseKey(to) + "\x00"
	want, key := from, s.leaseKey(from)
	for {
		rctx, cancel := s.request(ctx)
		resp, err := s.cli.Get(rctx, key, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(nextFreePage))
		cancel()
		if err != nil {
			return netip.Addr{}, s.unavailable(fmt.Sprintf("next free in %s-%s", from, to), err)
		}
		for _, kv := range resp.Kvs {
			switch k, wk := string(kv.Key), s.leaseKey(want); {
			case k > wk:
				return want, nil
			case k == wk && want == to:
				return netip.Addr{}, fmt.Errorf("no free address in %s-%s: %w", from, to, store.ErrNotFound)
			case k == wk:
				want = want.Next()
			} // k < wk: not a lease key
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return want, nil // no key at or after want's in the range
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Cursor returns the network's cursor of a range set. The cursor is
// shared by every host, so that an address released on one host is not
// handed out again by another while others are free.
func (s *Store) Cursor(ctx context.Context, set string) (netip.Addr, error) {
	if err := s.requireLock("cursor"); err != nil {
		return netip.Addr{}, err
	}
	if err := store.ValidateName("range set name", set); err != nil {
		return netip.Addr{}, fmt.Errorf("cursor: %w", err)
	}
	if ip, ok := s.cursors[set]; ok {
		return ip, nil
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.cursorKey(set))
	if err != nil {
		return netip.Addr{}, s.unavailable("read cursor "+set, err)
	}
	if len(resp.Kvs) == 0 {
		return netip.Addr{}, nil
	}
	return store.ParseCursor(s.log, set, resp.Kvs[0].Value), nil
}

// SetCursor records the cursor of a range set; Unlock writes it with the
// section's reservations, saving a round trip. It is a hint: when two
// hosts race, the last write wins, which costs a little fairness only.
func (s *Store) SetCursor(_ context.Context, set string, ip netip.Addr) error {
	if err := s.requireLock("set cursor"); err != nil {
		return err
	}
	if err := store.ValidateName("range set name", set); err != nil {
		return fmt.Errorf("set cursor: %w", err)
	}
	s.cursors[set] = ip
	return nil
}

// listPage is how many records List reads at a time.
const listPage = 1000

// rangeAll reads every key under prefix, in pages, all at one revision.
func (s *Store) rangeAll(ctx context.Context, prefix string, opts ...clientv3.OpOption) ([]*mvccKV, int64, error) {
	var out []*mvccKV
	end := clientv3.GetPrefixRangeEnd(prefix)
	key, rev := prefix, int64(0)
	for {
		o := append([]clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage), clientv3.WithRev(rev)}, opts...)
		rctx, cancel := s.request(ctx)
		resp, err := s.cli.Get(rctx, key, o...)
		cancel()
		if err != nil {
			return nil, 0, s.unavailable("read "+prefix, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		out = append(out, resp.Kvs...)
		if !resp.More || len(resp.Kvs) == 0 {
			return out, rev, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// List reads every lease, in address order (IPv4 first). Keys under the
// lease prefix that are not lease keys are not maclan's and are skipped.
func (s *Store) List(ctx context.Context) ([]store.Lease, error) {
	if err := s.requireLock("list"); err != nil {
		return nil, err
	}
	kvs, _, err := s.rangeAll(ctx, s.leasePrefix())
	if err != nil {
		return nil, err
	}
	leases := make([]store.Lease, 0, len(kvs))
	var bad []error
	for _, kv := range kvs {
		name := strings.TrimPrefix(string(kv.Key), s.leasePrefix())
		ip, ok := parseAddrKey(name)
		if !ok {
			continue // not maclan's: another program's key (fsck notes it)
		}
		l, err := decodeLease(ip, kv.Value)
		if err != nil {
			bad = append(bad, err)
			continue
		}
		leases = append(leases, l)
	}
	return leases, errors.Join(bad...)
}

// CheckWritable proves that etcd can commit now: a linearizable read,
// which needs a leader and a quorum, and no NOSPACE alarm (which makes
// etcd refuse writes).
func (s *Store) CheckWritable() error {
	ctx, cancel := s.request(context.Background())
	defer cancel()
	if _, err := s.cli.Get(ctx, s.cursorKey("0"), clientv3.WithCountOnly()); err != nil {
		return s.unavailable("quorum read", err)
	}
	alarms, err := s.cli.AlarmList(ctx)
	if err != nil {
		return s.unavailable("list alarms", err)
	}
	if len(alarms.Alarms) > 0 {
		return fmt.Errorf("etcd at %s: alarm %s raised, writes refused: %w", s.Endpoints(), alarms.Alarms[0].Alarm, store.ErrUnavailable)
	}
	return nil
}
