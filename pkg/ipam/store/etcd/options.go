package etcd

import (
	"crypto/tls"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// DefaultPendingTTL is the default of Options.PendingTTL. The other
// defaults are shared with the configuration: store.DefaultEtcdPrefix,
// store.DefaultEtcdDialTimeout, store.DefaultEtcdRequestTimeout and
// store.DefaultLockTimeout.
const DefaultPendingTTL = 15 * time.Second

// Options configure a Store.
type Options struct {
	// Endpoints are etcd client URLs (http://host:2379, https://...).
	Endpoints []string
	// Prefix is the key prefix of every network (default store.DefaultEtcdPrefix).
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
	// LockTimeout bounds Lock (default store.DefaultLockTimeout).
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
