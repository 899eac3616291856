package etcd

import (
	"fmt"
	"strings"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// Endpoints names the etcd endpoints, as error messages do, without any
// credentials (New refuses them; this is a second line).
func (s *Store) Endpoints() string {
	eps := make([]string, len(s.opts.Endpoints))
	for i, ep := range s.opts.Endpoints {
		eps[i] = redactEndpoint(ep)
	}
	return strings.Join(eps, ",")
}

// redactEndpoint replaces the userinfo of an endpoint URL, if any, so that
// no message repeats a password.
func redactEndpoint(ep string) string {
	start, at, found := store.EndpointCredentials(ep)
	if !found {
		return ep
	}
	return ep[:start] + "REDACTED" + ep[at:]
}

// checkEndpoints refuses endpoints that carry credentials: maclan
// authenticates to etcd with TLS client certificates only, and a password
// in a URL would be repeated in every error message and log line.
func checkEndpoints(eps []string) error {
	if len(eps) == 0 {
		return fmt.Errorf("no endpoints")
	}
	for i, ep := range eps {
		if _, _, found := store.EndpointCredentials(ep); found {
			return fmt.Errorf("endpoint %d %q carries credentials (user:password@); authenticate with a TLS client certificate instead", i, redactEndpoint(ep))
		}
	}
	return nil
}

// redactAll redacts, in an error text from the etcd client, every
// endpoint it may quote.
func redactAll(text string, eps []string) string {
	for _, ep := range eps {
		if r := redactEndpoint(ep); r != ep {
			text = strings.ReplaceAll(text, ep, r)
		}
	}
	return text
}
