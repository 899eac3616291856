package ipamconf

import (
	"net/url"
	"path/filepath"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// maxEtcdTimeout bounds dialTimeout and requestTimeout; their defaults are
// store.DefaultEtcdDialTimeout and store.DefaultEtcdRequestTimeout.
const maxEtcdTimeout = time.Minute

// EtcdConf is the etcd part of the "store" object:
//
//	"store": {"type": "etcd", "endpoints": ["https://10.0.0.5:2379"],
//	          "prefix": "/maclan", "dialTimeout": "2s", "requestTimeout": "5s",
//	          "tls": {"ca": "/etc/maclan/ca.pem", "cert": "...", "key": "..."}}
type EtcdConf struct {
	Endpoints   []string `json:"endpoints,omitempty"`
	Prefix      string   `json:"prefix,omitempty"`
	DialTimeout Duration `json:"dialTimeout,omitempty"`
	// RequestTimeout bounds each etcd request once connected.
	RequestTimeout Duration `json:"requestTimeout,omitempty"`
	TLS            *EtcdTLS `json:"tls,omitempty"`
}

// EtcdTLS names PEM files: the CA that signed etcd's certificate (empty:
// the system's roots) and the client certificate and key (both or neither).
type EtcdTLS struct {
	CA   string `json:"ca"`
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

func (e *EtcdConf) empty() bool {
	return len(e.Endpoints) == 0 && e.Prefix == "" && e.DialTimeout == 0 && e.RequestTimeout == 0 && e.TLS == nil
}

// validate applies the defaults and checks every field, naming it.
func (e *EtcdConf) validate() error {
	if len(e.Endpoints) == 0 {
		return invalid("ipam.store.endpoints: an etcd store needs at least one endpoint")
	}
	secure := false
	for i, ep := range e.Endpoints {
		if _, _, found := store.EndpointCredentials(ep); found {
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
		e.Prefix = store.DefaultEtcdPrefix
	}
	if store.ValidateEtcdPrefix(e.Prefix) != nil {
		return invalid("ipam.store.prefix %q: want a key prefix such as \"/maclan\": a leading '/', no trailing '/', no empty segment or whitespace", e.Prefix)
	}
	for _, f := range []struct {
		name string
		d    *Duration
		def  time.Duration
	}{{"dialTimeout", &e.DialTimeout, store.DefaultEtcdDialTimeout}, {"requestTimeout", &e.RequestTimeout, store.DefaultEtcdRequestTimeout}} {
		switch d := time.Duration(*f.d); {
		case d == 0:
			*f.d = Duration(f.def)
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
func ValidateEtcd(e *EtcdConf) error { return e.validate() }
