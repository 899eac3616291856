// Package iprange does the address arithmetic of maclan-ipam: ranges inside a
// subnet, the addresses a range never hands out, and range sets. It has no I/O.
//
// Addresses are netip.Addr in their unmapped form: an IPv4-mapped IPv6
// address ("::ffff:10.0.0.1") is treated as the IPv4 address it maps.
package iprange

import (
	"errors"
	"fmt"
	"net/netip"
)

// Range is one contiguous block of a subnet that may be handed out, with the
// host-local meaning of its fields: RangeStart and RangeEnd are inclusive and
// default to the first and last host address of Subnet, and Gateway defaults
// to the first address after the network address.
type Range struct {
	Subnet     netip.Prefix `json:"subnet"`
	RangeStart netip.Addr   `json:"rangeStart,omitzero"`
	RangeEnd   netip.Addr   `json:"rangeEnd,omitzero"`
	Gateway    netip.Addr   `json:"gateway,omitzero"`
}

// RangeSet is a list of ranges of one address family from which one address
// is allocated per attachment.
type RangeSet []Range

// unusable are the blocks that no interface address may come from.
var unusable = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "\"this network\", RFC 1122 section 3.2.1.3"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback, RFC 1122 section 3.2.1.3"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast, RFC 5771"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved, RFC 1112 section 4"},
	{netip.MustParsePrefix("::/8"), "unspecified, loopback and embedded IPv4, RFC 4291 section 2.4"},
	{netip.MustParsePrefix("ff00::/8"), "multicast, RFC 4291 section 2.7"},
}

// Canonicalize checks r and fills in the defaults. Errors name the field.
func (r *Range) Canonicalize() error {
	if !r.Subnet.IsValid() {
		return errors.New("subnet is missing")
	}
	sub := Canon(r.Subnet.Addr())
	bits := r.Subnet.Bits()
	if sub.Is4() && r.Subnet.Addr().Is4In6() {
		bits -= 96
		if bits < 0 {
			return fmt.Errorf("subnet %s: prefix too short for a mapped IPv4 address", r.Subnet)
		}
	}
	p := netip.PrefixFrom(sub, bits)
	if p.Masked().Addr() != sub {
		return fmt.Errorf("subnet %s has host bits set (network address is %s)", r.Subnet, p.Masked().Addr())
	}
	// A /31 or /32 (/127, /128) has no address left once the network and
	// broadcast are set aside; host-local refuses them too.
	if bits > sub.BitLen()-2 {
		return fmt.Errorf("subnet %s is too small to allocate from", p)
	}
	for _, u := range unusable {
		if p.Overlaps(u.prefix) {
			return fmt.Errorf("subnet %s includes %s (%s), which no host may use", p, u.prefix, u.what)
		}
	}
	r.Subnet = p
	first, last := FirstHost(p), LastHost(p)

	// Each address field defaults when absent and must lie in the subnet.
	for _, f := range []struct {
		name string
		addr *netip.Addr
		def  netip.Addr
	}{{"gateway", &r.Gateway, first}, {"rangeStart", &r.RangeStart, first}, {"rangeEnd", &r.RangeEnd, last}} {
		if !f.addr.IsValid() {
			*f.addr = f.def
			continue
		}
		*f.addr = Canon(*f.addr)
		if !p.Contains(*f.addr) {
			return fmt.Errorf("%s %s is not in subnet %s", f.name, *f.addr, p)
		}
	}
	if r.RangeStart.Compare(r.RangeEnd) > 0 {
		return fmt.Errorf("rangeStart %s is after rangeEnd %s in subnet %s", r.RangeStart, r.RangeEnd, p)
	}
	return nil
}

// Contains reports whether ip lies between RangeStart and RangeEnd.
func (r Range) Contains(ip netip.Addr) bool {
	ip = Canon(ip)
	return ip.BitLen() == r.RangeStart.BitLen() && ip.Compare(r.RangeStart) >= 0 && ip.Compare(r.RangeEnd) <= 0
}

// Reserved reports whether ip is one of the addresses of the subnet that are
// never handed out: the network address, the IPv4 broadcast address
// (RFC 919/922) and the gateway.
func (r Range) Reserved(ip netip.Addr) bool {
	ip = Canon(ip)
	if ip == r.Subnet.Addr() || ip == r.Gateway {
		return true
	}
	return ip.Is4() && ip == Last(r.Subnet)
}

// Overlaps reports whether the two ranges share an address.
func (r Range) Overlaps(o Range) bool {
	if r.RangeStart.BitLen() != o.RangeStart.BitLen() {
		return false
	}
	return r.RangeStart.Compare(o.RangeEnd) <= 0 && o.RangeStart.Compare(r.RangeEnd) <= 0
}

// String is "start-end".
func (r Range) String() string { return r.RangeStart.String() + "-" + r.RangeEnd.String() }

// Canonicalize canonicalizes every range of the set and checks that they are
// of one family and do not overlap.
func (s RangeSet) Canonicalize() error {
	if len(s) == 0 {
		return errors.New("empty range set")
	}
	// The errors are those of checking each range in order against all
	// before it: the ranges that canonicalize are checked for overlaps
	// (sorted, see firstOverlap), and the first overlap found comes before
	// the first bad range if it lies before it.
	n, bad := s.canonicalizeEach()
	spans := make([]span, n)
	for i, r := range s[:n] {
		spans[i] = span{lo: r.RangeStart, hi: r.RangeEnd, owner: i, idx: i}
	}
	if i, j, ok := firstOverlap(spans); ok {
		return fmt.Errorf("range %d (%s) overlaps range %d (%s)", i, s[i], j, s[j])
	}
	return bad
}

// canonicalizeEach canonicalizes the ranges in order until one fails or is
// of another family than range 0, and returns how many passed and the
// error of the one that did not.
func (s RangeSet) canonicalizeEach() (int, error) {
	for i := range s {
		if err := s[i].Canonicalize(); err != nil {
			return i, fmt.Errorf("range %d: %w", i, err)
		}
		if s[i].Subnet.Addr().BitLen() != s[0].Subnet.Addr().BitLen() {
			return i, fmt.Errorf("range %d (%s) is not of the same address family as range 0 (%s)", i, s[i].Subnet, s[0].Subnet)
		}
	}
	return len(s), nil
}

// Is4 reports whether the set is IPv4.
func (s RangeSet) Is4() bool { return len(s) > 0 && s[0].Subnet.Addr().Is4() }

// RangeFor returns the index of the range holding ip, or -1.
func (s RangeSet) RangeFor(ip netip.Addr) int {
	for i, r := range s {
		if r.Contains(ip) {
			return i
		}
	}
	return -1
}

// Overlaps reports whether any range of s overlaps any range of o. It
// compares every pair: to check many sets, use FirstOverlap.
func (s RangeSet) Overlaps(o RangeSet) bool {
	for _, a := range s {
		for _, b := range o {
			if a.Overlaps(b) {
				return true
			}
		}
	}
	return false
}

// Canon returns ip with an IPv4-mapped IPv6 address turned into IPv4 and any
// zone dropped.
func Canon(ip netip.Addr) netip.Addr { return ip.Unmap().WithZone("") }

// Last returns the last address of p (the broadcast address for IPv4).
func Last(p netip.Prefix) netip.Addr {
	p = p.Masked()
	if p.Addr().Is4() {
		a := p.Addr().As4()
		for i := p.Bits(); i < 32; i++ {
			a[i/8] |= 0x80 >> (i % 8)
		}
		return netip.AddrFrom4(a)
	}
	a := p.Addr().As16()
	for i := p.Bits(); i < 128; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom16(a)
}

// FirstHost is the first address after the network address of p.
func FirstHost(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

// LastHost is the last address of p that a host may hold: the last address
// for IPv6 (as host-local does), the one before the broadcast for IPv4.
func LastHost(p netip.Prefix) netip.Addr {
	l := Last(p)
	if l.Is4() {
		return l.Prev()
	}
	return l
}

// ParseAddrOrPrefix parses "10.0.0.5" or "10.0.0.5/24" and returns the
// address, canonicalized. Runtimes pass requested addresses in both forms.
func ParseAddrOrPrefix(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return Canon(p.Addr()), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is neither an IP address nor a CIDR", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q: zoned addresses are not allocatable", s)
	}
	return Canon(a), nil
}

// ParsePrefixOrAddr parses "10.0.0.0/28" or a lone "10.0.0.7" (taken as a
// /32 or /128). The prefix is masked to its network address.
func ParsePrefixOrAddr(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		a := Canon(p.Addr())
		bits := p.Bits()
		if p.Addr().Is4In6() {
			bits -= 96
			if bits < 0 {
				bits = 0
			}
		}
		return netip.PrefixFrom(a, bits).Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a CIDR", s)
	}
	a = Canon(a)
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Excluded reports whether ip lies in one of the prefixes and, if so, returns
// the first address after that prefix (invalid when the prefix runs to the end
// of the address space), so that a walk can jump over a whole excluded block.
// It scans the list: for more than one lookup, use Exclusions.
func Excluded(ip netip.Addr, exclude []netip.Prefix) (bool, netip.Addr) {
	for _, p := range exclude {
		if p.Contains(ip) {
			return true, Last(p).Next()
		}
	}
	return false, netip.Addr{}
}
