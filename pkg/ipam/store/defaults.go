package store

import (
	"fmt"
	"strings"
	"time"
)

// The defaults and rules below are shared by both stores, the IPAM
// configuration (pkg/ipam/ipamconf) and the operator tool's flags: each has
// this one home.
const (
	// DefaultLockTimeout bounds Lock when nothing else is configured.
	DefaultLockTimeout = 10 * time.Second
	// DefaultEtcdPrefix is the etcd key prefix under which each network
	// has its keys.
	DefaultEtcdPrefix = "/maclan"
	// DefaultEtcdDialTimeout bounds the connection to etcd.
	DefaultEtcdDialTimeout = 2 * time.Second
	// DefaultEtcdRequestTimeout bounds each etcd request once connected.
	DefaultEtcdRequestTimeout = 5 * time.Second
)

// ValidateEtcdPrefix checks an etcd key prefix: it starts with '/', does
// not end with one, and holds no empty segment, whitespace or control byte.
func ValidateEtcdPrefix(p string) error {
	switch {
	case !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//"):
		return fmt.Errorf("key prefix %q must start with '/', not end with one, and have no empty segment", p)
	case strings.IndexFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return fmt.Errorf("key prefix %q contains whitespace or a control byte", p)
	}
	return nil
}

// EndpointCredentials reports whether an endpoint URL has a userinfo part
// (RFC 3986 section 3.2.1, "user:password@" before the host), whether or
// not it parses: an '@' in the authority, which runs from "scheme://" (or
// the start, without one) to the first '/', '?' or '#'. It returns the
// authority's offsets in ep, for redaction.
func EndpointCredentials(ep string) (start, at int, found bool) {
	if i := strings.Index(ep, "://"); i >= 0 {
		start = i + 3
	}
	end := len(ep)
	if i := strings.IndexAny(ep[start:], "/?#"); i >= 0 {
		end = start + i
	}
	at = strings.LastIndexByte(ep[start:end], '@')
	if at < 0 {
		return start, 0, false
	}
	return start, start + at, true
}
