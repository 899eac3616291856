package config

import (
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// Defaults of the etcd store.
const (
	DefaultEtcdPrefix         = "/maclan"
	DefaultEtcdDialTimeout    = 2 * time.Second
	DefaultEtcdRequestTimeout = 5 * time.Second
	maxEtcdTimeout            = time.Minute
)

// IPAMEtcdConf is the etcd part of the "store" object:
//
//	"store": {"type": "etcd", "endpoints": ["https://10.0.0.5:2379"],
//	          "prefix": "/maclan", "dialTimeout": "2s", "requestTimeout": "5s",
//	          "tls": {"ca": "/etc/maclan/ca.pem", "cert": "...", "key": "..."}}
type IPAMEtcdConf struct {
	Endpoints   []string     `json:"endpoints,omitempty"`
	Prefix      string       `json:"prefix,omitempty"`
	DialTimeout IPAMDuration `json:"dialTimeout,omitempty"`
	// RequestTimeout bounds each etcd request once connected.
	RequestTimeout IPAMDuration `json:"requestTimeout,omitempty"`
	TLS            *IPAMEtcdTLS `json:"tls,omitempty"`
}

// IPAMEtcdTLS names PEM files: the CA that signed etcd's certificate (empty:
// the system's roots) and the client certificate and key (both or neither).
type IPAMEtcdTLS struct {
	CA   string `json:"ca"`
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

func (e *IPAMEtcdConf) empty() bool {
	return len(e.Endpoints) == 0 && e.Prefix == "" && e.DialTimeout == 0 && e.RequestTimeout == 0 && e.TLS == nil
}

// validate applies the defaults and checks every field, naming it.
func (e *IPAMEtcdConf) validate() error {
	if len(e.Endpoints) == 0 {
		return invalid("ipam.store.endpoints: an etcd store needs at least one endpoint")
	}
	secure := false
	for i, ep := range e.Endpoints {
		if endpointCredentials(ep) {
			// Checked first, so that no other message repeats the URL.
			return invalid("ipam.store.endpoints[%d]: the URL carries a user name or password, which would be "+
				"repeated in logs and error messages; remove it and authenticate with a TLS client certificate (ipam.store.tls.cert, ipam.store.tls.key)", i)
		}
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
			return invalid("ipam.store.endpoints[%d] %q: want http://host:port or https://host:port", i, ep)
		}
		if i > 0 && secure != (u.Scheme == "https") {
			return invalid("ipam.store.endpoints[%d] %q: mixes http and https endpoints", i, ep)
		}
		secure = u.Scheme == "https"
	}
	if e.Prefix == "" {
		e.Prefix = DefaultEtcdPrefix
	}
	if !strings.HasPrefix(e.Prefix, "/") || strings.HasSuffix(e.Prefix, "/") || strings.Contains(e.Prefix, "//") ||
		strings.IndexFunc(e.Prefix, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return invalid("ipam.store.prefix %q: want a key prefix such as \"/maclan\": a leading '/', no trailing '/', no empty segment or whitespace", e.Prefix)
	}
	for _, f := range []struct {
		name string
		d    *IPAMDuration
		def  time.Duration
	}{{"dialTimeout", &e.DialTimeout, DefaultEtcdDialTimeout}, {"requestTimeout", &e.RequestTimeout, DefaultEtcdRequestTimeout}} {
		switch d := time.Duration(*f.d); {
		case d == 0:
			*f.d = IPAMDuration(f.def)
		case d < 0 || d > maxEtcdTimeout:
			return invalid("ipam.store.%s %s is outside (0, %s]", f.name, d, maxEtcdTimeout)
		}
	}
	if e.TLS != nil {
		if !secure {
			return invalid("ipam.store.tls is set but the endpoints are http://; use https://")
		}
		if (e.TLS.Cert == "") != (e.TLS.Key == "") {
			return invalid("ipam.store.tls: cert and key go together (got cert %q, key %q)", e.TLS.Cert, e.TLS.Key)
		}
		for _, f := range []struct{ name, path string }{{"ca", e.TLS.CA}, {"cert", e.TLS.Cert}, {"key", e.TLS.Key}} {
			if f.path != "" && !filepath.IsAbs(f.path) {
				return invalid("ipam.store.tls.%s %q is not an absolute path", f.name, f.path)
			}
		}
	}
	return nil
}

// ValidateEtcd applies the defaults to an etcd store object given outside
// a net conf (the operator tool's flags) and checks it.
func ValidateEtcd(e *IPAMEtcdConf) error { return e.validate() }

// endpointCredentials reports whether an endpoint URL has a userinfo part
// (RFC 3986 section 3.2.1: "user:password@" before the host), whether or
// not it parses: an '@' in the authority, the part after "scheme://" (or
// from the start, without one) up to the first '/', '?' or '#'.
func endpointCredentials(ep string) bool {
	if _, rest, ok := strings.Cut(ep, "://"); ok {
		ep = rest
	}
	if i := strings.IndexAny(ep, "/?#"); i >= 0 {
		ep = ep[:i]
	}
	return strings.Contains(ep, "@")
}
