package etcd

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Defaults of Options.
const (
	DefaultPrefix         = "/maclan"
	DefaultDialTimeout    = 2 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	DefaultLockTimeout    = 10 * time.Second
	DefaultPendingTTL     = 15 * time.Second
)

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

// dial connects to etcd, blocking until connected or DialTimeout, so that
// an unreachable etcd is reported at once and in one place.
func dial(opts Options) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:            opts.Endpoints,
		TLS:                  opts.TLS,
		DialTimeout:          opts.DialTimeout,
		DialOptions:          []grpc.DialOption{grpc.WithBlock()}, //nolint:staticcheck // the etcd client dials with DialContext
		Logger:               zap.NewNop(),
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: opts.DialTimeout,
	})
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
