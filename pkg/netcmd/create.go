package netcmd

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ipam/iprange"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

var createFlags = []flagSpec{
	{names: []string{"driver", "d"}},
	{names: []string{"subnet"}, repeat: true},
	{names: []string{"gateway"}, repeat: true},
	{names: []string{"ip-range"}, repeat: true},
	{names: []string{"aux-address"}, repeat: true},
	{names: []string{"opt", "o"}, repeat: true},
	{names: []string{"ipv6"}, isBool: true},
	{names: []string{"host-shim"}, isBool: true},
	{names: []string{"host-shim-address"}},
	{names: []string{"conflict-detection"}, isBool: true},
	{names: []string{"mac-from-ip"}, isBool: true},
	{names: []string{"store"}},
	{names: []string{"data-dir"}},
	{names: []string{"etcd-endpoints"}},
	{names: []string{"etcd-prefix"}},
}

// createReq is "maclan network create" decoded and checked against itself;
// what it must not clash with on the host is checked by create.
type createReq struct {
	name      string
	parent    string
	mode      string
	mtu       int
	ipv6      bool
	subnets   []subnetReq
	aux       []auxAddr
	shim      bool
	shimAddr  string
	conflict  bool
	macFromIP bool
	storeType string // "disk" or "etcd"
	dataDir   string
	endpoints []string
	prefix    string
}

// subnetReq is one --subnet with the --gateway and --ip-range that fall in it.
type subnetReq struct {
	subnet  netip.Prefix
	gateway netip.Addr   // invalid: the subnet's first address
	ipRange netip.Prefix // invalid: the whole subnet
	aux     []netip.Addr // excluded addresses in this subnet
}

// auxAddr is a Docker auxiliary address: a name for an address of the
// subnet that is never handed out.
type auxAddr struct {
	name string
	ip   netip.Addr
}

func create(e *env, args []string) error {
	p, err := e.parse(args, createFlags)
	if err != nil {
		return err
	}
	req, err := parseCreate(p)
	if err != nil {
		return err
	}
	if _, err = writeNetwork(e.confDir, req); err != nil {
		return err
	}
	// Like podman, print the name (Docker prints the new network's ID).
	_, err = fmt.Fprintln(e.stdout, req.name)
	return err
}

// parseCreate turns the flags of create into a request, checking each flag
// and how the flags fit together, the way Docker's CLI and daemon do.
func parseCreate(p parsedArgs) (createReq, error) {
	if len(p.args) != 1 {
		return createReq{}, usagef("\"create\" requires exactly 1 argument (the network name), got %d", len(p.args))
	}
	req := createReq{name: p.args[0], mode: config.ModeBridge, storeType: "disk",
		ipv6: p.bool("ipv6"), shim: p.bool("host-shim") || p.has("host-shim-address"),
		shimAddr: p.str("host-shim-address"), conflict: p.bool("conflict-detection"),
		macFromIP: p.bool("mac-from-ip"), dataDir: p.str("data-dir"), prefix: p.str("etcd-prefix")}
	if err := store.ValidateName("network name", req.name); err != nil {
		return req, usagef("%v", err)
	}
	switch d := p.str("driver"); d {
	case "", "macvlan", "maclan":
	default:
		return req, usagef("driver %q: maclan makes macvlan networks only (-d macvlan)", d)
	}
	steps := []func(*createReq, parsedArgs) error{
		(*createReq).parseOpts, (*createReq).parseSubnets, (*createReq).parseGateways,
		(*createReq).parseRanges, (*createReq).parseAux, (*createReq).parseStore,
	}
	for _, step := range steps {
		if err := step(&req, p); err != nil {
			return req, err
		}
	}
	return req, nil
}

// parseOpts reads the driver options (-o KEY=VALUE) of Docker's macvlan
// driver, plus mtu.
func (r *createReq) parseOpts(p parsedArgs) error {
	for _, o := range p.list("opt") {
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			return usagef("-o %q: want KEY=VALUE", o)
		}
		switch k {
		case "parent":
			r.parent = v
		case "macvlan_mode":
			switch v {
			case config.ModeBridge, config.ModePrivate, config.ModeVEPA, config.ModePassthru:
				r.mode = v
			default:
				return usagef("-o macvlan_mode=%s: unknown mode (want bridge, private, vepa or passthru)", v)
			}
		case "mtu":
			n, err := strconv.Atoi(v)
			if err != nil || n < 68 {
				return usagef("-o mtu=%s: want a number of bytes, at least 68 (RFC 791)", v)
			}
			r.mtu = n
		default:
			return usagef("-o %s: unknown option (maclan takes parent, macvlan_mode and mtu)", k)
		}
	}
	return nil
}

func (r *createReq) parseSubnets(p parsedArgs) error {
	if !p.has("subnet") {
		return usagef("--subnet is required: give the subnet of your LAN (maclan does not pick a private pool as Docker does)")
	}
	has6 := false
	for _, s := range p.list("subnet") {
		sub, err := parseCIDR("--subnet", s)
		if err != nil {
			return err
		}
		for _, o := range r.subnets {
			if o.subnet.Overlaps(sub) {
				return usagef("--subnet %s overlaps --subnet %s", sub, o.subnet)
			}
		}
		has6 = has6 || sub.Addr().Is6()
		r.subnets = append(r.subnets, subnetReq{subnet: sub})
	}
	switch {
	case has6 && !r.ipv6:
		return usagef("an IPv6 --subnet needs --ipv6, as with Docker")
	case r.ipv6 && !has6:
		return usagef("--ipv6 needs an IPv6 --subnet (maclan does not pick one)")
	}
	return nil
}

// parseCIDR parses the CIDR of flag, which must be a network address (no
// host bits set), as Docker requires.
func parseCIDR(flag, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Zone() != "" {
		return p, usagef("invalid %s %q: want a CIDR such as 192.168.1.0/24", flag, s)
	}
	if p.Addr().Is4In6() {
		return p, usagef("invalid %s %s: write an IPv4 subnet in dotted form", flag, s)
	}
	if p.Masked() != p {
		return p, usagef("invalid %s %s: host bits are set; did you mean %s?", flag, s, p.Masked())
	}
	return p, nil
}

// subnetOf returns the index of the --subnet holding ip, or -1.
func (r *createReq) subnetOf(ip netip.Addr) int {
	for i, s := range r.subnets {
		if s.subnet.Contains(ip) {
			return i
		}
	}
	return -1
}

func (r *createReq) parseGateways(p parsedArgs) error {
	for _, g := range p.list("gateway") {
		ip, err := netip.ParseAddr(g)
		if err != nil {
			return usagef("invalid --gateway %q: want an IP address", g)
		}
		ip = iprange.Canon(ip)
		i := r.subnetOf(ip)
		if i < 0 {
			return usagef("no --subnet contains --gateway %s", ip)
		}
		s := &r.subnets[i]
		if s.gateway.IsValid() {
			return usagef("--gateway %s and --gateway %s are both in --subnet %s: one gateway per subnet", s.gateway, ip, s.subnet)
		}
		if ip == s.subnet.Addr() || (ip.Is4() && ip == iprange.Last(s.subnet)) {
			return usagef("--gateway %s is the network or broadcast address of --subnet %s", ip, s.subnet)
		}
		s.gateway = ip
	}
	return nil
}

func (r *createReq) parseRanges(p parsedArgs) error {
	for _, s := range p.list("ip-range") {
		rg, err := parseCIDR("--ip-range", s)
		if err != nil {
			return err
		}
		i := r.subnetOf(rg.Addr())
		if i < 0 || rg.Bits() < r.subnets[i].subnet.Bits() {
			return usagef("no --subnet contains --ip-range %s", rg)
		}
		sr := &r.subnets[i]
		if sr.ipRange.IsValid() {
			return usagef("--ip-range %s and --ip-range %s are both in --subnet %s: one range per subnet", sr.ipRange, rg, sr.subnet)
		}
		if first, last := clampRange(rg, sr.subnet); first.Compare(last) > 0 {
			return usagef("--ip-range %s holds no address a container may have in --subnet %s", rg, sr.subnet)
		}
		sr.ipRange = rg
	}
	return nil
}

// clampRange is the part of ipRange a container may be given: without the
// subnet's network and (IPv4) broadcast addresses, which Docker also never
// hands out from an --ip-range.
func clampRange(ipRange, subnet netip.Prefix) (first, last netip.Addr) {
	first, last = ipRange.Masked().Addr(), iprange.Last(ipRange)
	if lo := iprange.FirstHost(subnet); first.Less(lo) {
		first = lo
	}
	if hi := iprange.LastHost(subnet); hi.Less(last) {
		last = hi
	}
	return first, last
}

func (r *createReq) parseAux(p parsedArgs) error {
	seen := map[string]bool{}
	for _, a := range p.list("aux-address") {
		name, s, ok := strings.Cut(a, "=")
		if !ok || name == "" {
			return usagef("invalid --aux-address %q: want NAME=IP", a)
		}
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return usagef("invalid --aux-address %s: %q is not an IP address", name, s)
		}
		ip = iprange.Canon(ip)
		if seen[name] {
			return usagef("--aux-address %s given twice", name)
		}
		seen[name] = true
		i := r.subnetOf(ip)
		if i < 0 {
			return usagef("no --subnet contains --aux-address %s=%s", name, ip)
		}
		r.subnets[i].aux = append(r.subnets[i].aux, ip)
		r.aux = append(r.aux, auxAddr{name: name, ip: ip})
	}
	return nil
}

func (r *createReq) parseStore(p parsedArgs) error {
	if ep := p.str("etcd-endpoints"); ep != "" {
		r.endpoints = strings.Split(ep, ",")
	}
	switch t := p.str("store"); {
	case t == "etcd" || (t == "" && len(r.endpoints) > 0):
		r.storeType = "etcd"
		if len(r.endpoints) == 0 {
			return usagef("--store etcd needs --etcd-endpoints URL[,URL...]")
		}
	case t == "" || t == "disk":
		if len(r.endpoints) > 0 || r.prefix != "" {
			return usagef("--etcd-endpoints and --etcd-prefix are for --store etcd")
		}
	default:
		return usagef("--store %q: want disk or etcd", t)
	}
	return nil
}
