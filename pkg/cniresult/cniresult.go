// Package cniresult prints a CNI result (types/100) with the bytes that
// Result.PrintTo writes, without encoding/json's reflection: PrintTo's
// MarshalJSON encodes the result, decodes it into maps to drop an empty
// "dns", and encodes the maps again, so a new process (every CNI call is
// one) builds encoding/json's encoders and decoders for all of it first.
// That was the largest part of printing a result, twice per ADD (the IPAM's
// and the plugin's). Anything the encoder here does not cover is left to
// PrintTo, so the output is the same for every result (TestPrintMatches,
// FuzzPrint).
package cniresult

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"strconv"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/maclan-cni/maclan/pkg/jsonenc"
)

// Print writes r to w as r.PrintTo(w) does.
func Print(w io.Writer, r types.Result) error {
	res, ok := r.(*current.Result)
	if !ok {
		return r.PrintTo(w)
	}
	compact, ok := Marshal(res)
	if !ok {
		return r.PrintTo(w)
	}
	var out bytes.Buffer
	out.Grow(2 * len(compact))
	if err := json.Indent(&out, compact, "", "    "); err != nil {
		return r.PrintTo(w)
	}
	_, err := w.Write(out.Bytes())
	return err
}

// Marshal returns the bytes json.Marshal(r) writes, or false for a result
// it leaves to json.Marshal: a nil entry in a list, an address or mask of
// no IP length, a number beyond 2^53 (json.Marshal's maps hold numbers as
// float64) or text that is not UTF-8.
//
// Result's MarshalJSON goes through map[string]interface{}, so every
// object's keys come out sorted, at every level; the keys below are
// written in that order.
func Marshal(r *current.Result) ([]byte, bool) {
	e := &encoder{b: make([]byte, 0, 512)}
	e.object(
		member{"cniVersion", when(r.CNIVersion != "", func() { e.str(r.CNIVersion) })},
		member{"dns", when(!r.DNS.IsEmpty(), func() { e.dns(&r.DNS) })},
		member{"interfaces", when(len(r.Interfaces) > 0, func() { list(e, r.Interfaces, e.iface) })},
		member{"ips", when(len(r.IPs) > 0, func() { list(e, r.IPs, e.ipConfig) })},
		member{"routes", when(len(r.Routes) > 0, func() { list(e, r.Routes, e.route) })},
	)
	return e.b, e.ok()
}

// list writes xs as a JSON array; a nil entry (json.Marshal's null, which
// the result's MarshalJSON carries through its maps) is left to
// json.Marshal.
func list[T any](e *encoder, xs []*T, write func(*T)) {
	e.b = append(e.b, '[')
	for i, x := range xs {
		if x == nil {
			e.bad = true
			return
		}
		if i > 0 {
			e.b = append(e.b, ',')
		}
		write(x)
	}
	e.b = append(e.b, ']')
}

// encoder appends JSON to b; bad records what it could not encode as
// json.Marshal would.
type encoder struct {
	b   []byte
	bad bool
}

func (e *encoder) ok() bool { return !e.bad }

func (e *encoder) key(k string) {
	e.str(k)
	e.b = append(e.b, ':')
}

func (e *encoder) str(s string) {
	var ok bool
	if e.b, ok = jsonenc.AppendString(e.b, s); !ok {
		e.bad = true
	}
}

// maxExact is the largest integer every float64 holds exactly: the maps
// of Result's MarshalJSON turn numbers into float64.
const maxExact = 1 << 53

func (e *encoder) int(v int) {
	if v > maxExact || v < -maxExact {
		e.bad = true
		return
	}
	e.b = strconv.AppendInt(e.b, int64(v), 10)
}

// object writes the members of one JSON object, in the order given
// (sorted by the caller), skipping those whose write is nil.
type member struct {
	key   string
	write func()
}

func (e *encoder) object(members ...member) {
	e.b = append(e.b, '{')
	n := 0
	for _, m := range members {
		if m.write == nil {
			continue
		}
		if n > 0 {
			e.b = append(e.b, ',')
		}
		n++
		e.key(m.key)
		m.write()
	}
	e.b = append(e.b, '}')
}

// when returns write if cond, else nil (a member omitempty drops).
func when(cond bool, write func()) func() {
	if cond {
		return write
	}
	return nil
}

func (e *encoder) strs(vs []string) {
	var ok bool
	if e.b, ok = jsonenc.AppendStrings(e.b, vs); !ok {
		e.bad = true
	}
}

func (e *encoder) dns(d *types.DNS) {
	e.object(
		member{"domain", when(d.Domain != "", func() { e.str(d.Domain) })},
		member{"nameservers", when(len(d.Nameservers) > 0, func() { e.strs(d.Nameservers) })},
		member{"options", when(len(d.Options) > 0, func() { e.strs(d.Options) })},
		member{"search", when(len(d.Search) > 0, func() { e.strs(d.Search) })},
	)
}

func (e *encoder) iface(i *current.Interface) {
	e.object(
		member{"mac", when(i.Mac != "", func() { e.str(i.Mac) })},
		member{"mtu", when(i.Mtu != 0, func() { e.int(i.Mtu) })},
		member{"name", func() { e.str(i.Name) }},
		member{"pciID", when(i.PciID != "", func() { e.str(i.PciID) })},
		member{"sandbox", when(i.Sandbox != "", func() { e.str(i.Sandbox) })},
		member{"socketPath", when(i.SocketPath != "", func() { e.str(i.SocketPath) })},
	)
}

func (e *encoder) ipConfig(c *current.IPConfig) {
	e.object(
		member{"address", func() { e.ipNet(c.Address) }},
		member{"gateway", when(len(c.Gateway) > 0, func() { e.ip(c.Gateway) })},
		member{"interface", when(c.Interface != nil, func() { e.int(*c.Interface) })},
	)
}

func (e *encoder) route(r *types.Route) {
	e.object(
		member{"advmss", when(r.AdvMSS != 0, func() { e.int(r.AdvMSS) })},
		member{"dst", func() { e.ipNet(r.Dst) }},
		member{"gw", when(len(r.GW) > 0, func() { e.ip(r.GW) })},
		member{"mtu", when(r.MTU != 0, func() { e.int(r.MTU) })},
		member{"priority", when(r.Priority != 0, func() { e.int(r.Priority) })},
		member{"scope", when(r.Scope != nil, func() { e.int(*r.Scope) })},
		member{"table", when(r.Table != nil, func() { e.int(*r.Table) })},
	)
}

// ip writes a non-empty net.IP as its MarshalText does; an IP of another
// length than 4 or 16 bytes fails json.Marshal, which is left to it.
func (e *encoder) ip(ip net.IP) {
	if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
		e.bad = true
		return
	}
	e.str(ip.String())
}

// ipNet writes n as types.IPNet's MarshalJSON does (net.IPNet.String), for
// an address and mask of IP lengths; anything else is left to
// json.Marshal.
func (e *encoder) ipNet(n net.IPNet) {
	if (len(n.IP) != net.IPv4len && len(n.IP) != net.IPv6len) ||
		(len(n.Mask) != net.IPv4len && len(n.Mask) != net.IPv6len) {
		e.bad = true
		return
	}
	e.str(n.String())
}
