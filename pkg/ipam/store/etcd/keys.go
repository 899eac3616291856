package etcd

import (
	"encoding/hex"
	"net/netip"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"

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

func validAddr(ip netip.Addr) bool { return ip.IsValid() && ip.Zone() == "" && !ip.Is4In6() }
