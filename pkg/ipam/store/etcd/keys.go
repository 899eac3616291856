package etcd

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// The prefix of a network may hold keys that are not maclan's: another
// program given the same prefix, or a second maclan store whose prefix is
// nested in this network's keys (prefix /maclan/a with network "lease" puts
// its keys under network "a"'s lease/). The store reads, writes and deletes
// only keys of its own exact shapes, spelled exactly as it writes them;
// fsck reports the others as "foreign" and leaves them alone.

// Kinds of keys, as parseKey tells them apart.
const (
	keyForeign = iota // not a key of the store
	keyLease          // lease/<addr>
	keyIndex          // attach/<containerID>=<ifName>/<addr>
	keyCursor         // cursor/<range set>
)

// keyShape is what a key relative to a network's root names.
type keyShape struct {
	kind        int
	ip          netip.Addr // lease and index keys
	containerID string     // index keys
	ifName      string     // index keys
	set         string     // cursor keys
}

// parseKey classifies rel, a key with the network's root cut off. A key is
// the store's only if the store would write that very string for what it
// names; anything else is keyForeign.
func parseKey(rel string) keyShape {
	kind, rest, _ := strings.Cut(rel, "/")
	switch kind {
	case "lease":
		if ip, ok := parseAddrKey(rest); ok {
			return keyShape{kind: keyLease, ip: ip}
		}
	case "attach":
		// A container ID cannot contain '=' or '/', an interface name
		// cannot contain '/': the first '/' and the first '=' split it.
		at, addr, _ := strings.Cut(rest, "/")
		id, ifName, _ := strings.Cut(at, "=")
		ip, ok := parseAddrKey(addr)
		if ok && store.ValidateAttachment(id, ifName) == nil && rest == id+"="+ifName+"/"+addr {
			return keyShape{kind: keyIndex, ip: ip, containerID: id, ifName: ifName}
		}
	case "cursor":
		if store.ValidateName("", rest) == nil {
			return keyShape{kind: keyCursor, set: rest}
		}
	}
	return keyShape{kind: keyForeign}
}

// endpointCredentials reports whether an endpoint URL has a userinfo part
// (RFC 3986 section 3.2.1, "user:password@" before the host), whether or
// not it parses: an '@' in the authority, which runs from "scheme://" (or
// the start, without one) to the first '/', '?' or '#'. It returns the
// authority's offsets in ep.
func endpointCredentials(ep string) (start, at int, found bool) {
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

// redactEndpoint replaces the userinfo of an endpoint URL, if any, so that
// no message repeats a password.
func redactEndpoint(ep string) string {
	start, at, found := endpointCredentials(ep)
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
		if _, _, found := endpointCredentials(ep); found {
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
