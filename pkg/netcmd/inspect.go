package netcmd

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/iprange"
)

var inspectFlags = []flagSpec{{names: []string{"output", "o", "format", "f"}}}

// inspectOut is a network in the shape of Docker's "network inspect".
type inspectOut struct {
	Name       string            `json:"Name"`
	Created    time.Time         `json:"Created"`
	Scope      string            `json:"Scope"`
	Driver     string            `json:"Driver"`
	EnableIPv6 bool              `json:"EnableIPv6"`
	IPAM       ipamOut           `json:"IPAM"`
	ConfigFile string            `json:"ConfigFile"`
	Containers map[string]ctrOut `json:"Containers"`
	Options    map[string]string `json:"Options"`
	Labels     map[string]string `json:"Labels"`
	// LANConflicts maps an address of the range to the MAC of the LAN
	// device found using it (conflictDetection): never handed out.
	LANConflicts map[string]string `json:"LANConflicts,omitempty"`
	// Problem says why the plugins would refuse the configuration, or why
	// the leases could not be read.
	Problem string `json:"Problem,omitempty"`
}

type ipamOut struct {
	Driver string          `json:"Driver"`
	Config []ipamConfigOut `json:"Config"`
}

type ipamConfigOut struct {
	Subnet             string            `json:"Subnet"`
	IPRange            string            `json:"IPRange,omitempty"`
	Gateway            string            `json:"Gateway,omitempty"`
	AuxiliaryAddresses map[string]string `json:"AuxiliaryAddresses,omitempty"`
}

// ctrOut is one attachment holding leases. MacAddress and Name come from
// libcni's result cache when the runtime keeps one there, else from the
// lease (its workload, and the live link in its namespace).
type ctrOut struct {
	Name        string `json:"Name"`
	IfName      string `json:"IfName"`
	MacAddress  string `json:"MacAddress"`
	IPv4Address string `json:"IPv4Address"`
	IPv6Address string `json:"IPv6Address"`
}

func inspect(e *env, args []string) error {
	p, err := e.parse(args, inspectFlags)
	if err != nil {
		return err
	}
	if len(p.args) == 0 {
		return usagef("\"inspect\" requires at least 1 argument (the network name)")
	}
	out := p.str("output")
	if out != "" && out != "json" && out != "table" {
		return usagef("-o %q: want json or table", out)
	}
	var all []inspectOut
	for _, name := range p.args {
		n, err := findNetwork(e.confDir, name)
		if err != nil {
			return err
		}
		all = append(all, e.inspectNetwork(n))
	}
	if out == "table" {
		for _, o := range all {
			if err := printInspect(e, o); err != nil {
				return err
			}
		}
		return nil
	}
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "    ")
	return enc.Encode(all)
}

func (e *env) inspectNetwork(n network) inspectOut {
	o := inspectOut{
		Name: n.name, Created: n.created.UTC().Truncate(time.Second), Scope: "local", Driver: "maclan",
		ConfigFile: n.file, Containers: map[string]ctrOut{}, Options: map[string]string{}, Labels: map[string]string{},
		IPAM: ipamOut{Config: []ipamConfigOut{}},
	}
	if n.err != nil {
		o.Problem = "the plugins refuse this configuration: " + n.err.Error()
		return o
	}
	o.Options = options(n)
	o.IPAM.Driver = n.conf.IPAM.Type
	if n.ipam == nil {
		o.Problem = "IPAM " + n.conf.IPAM.Type + ": its leases are not kept by maclan"
		return o
	}
	o.IPAM.Config = ipamConfig(n)
	for _, c := range o.IPAM.Config {
		if netip.MustParsePrefix(c.Subnet).Addr().Is6() {
			o.EnableIPv6 = true
		}
	}
	leases, _, err := e.leases(n)
	if err != nil {
		o.Problem = err.Error()
	}
	o.Containers, o.LANConflicts = containers(n, leases, readCache(e.cacheDir, n.name))
	return o
}

// options are the driver options, under Docker's names where it has them.
func options(n network) map[string]string {
	c := n.conf
	opts := map[string]string{"parent": c.Master, "macvlan_mode": c.Mode}
	if c.Master == "" {
		opts["parent"] = parentName("")
	}
	if c.MTU > 0 {
		opts["mtu"] = strconv.Itoa(c.MTU)
	}
	if c.ShimEnabled() {
		opts["hostShim"] = "true"
		if c.HostShim.Address != "" {
			opts["hostShim"] = c.HostShim.Address
		}
	}
	if c.MACFromIP {
		opts["macFromIP"] = "true"
	}
	if n.ipam != nil {
		if n.ipam.ConflictDetection {
			opts["conflictDetection"] = "true"
		}
		opts["store"] = n.ipam.Store.Type + ":" + n.ipam.Store.Dir
		if n.ipam.Store.Type == "etcd" {
			opts["store"] = "etcd:" + strings.Join(n.ipam.Store.Endpoints, ",")
		}
	}
	return opts
}

// ipamConfig is one entry per subnet, as Docker's IPAM.Config.
func ipamConfig(n network) []ipamConfigOut {
	var cfg []ipamConfigOut
	for _, set := range n.ipam.Ranges {
		for _, r := range set {
			c := ipamConfigOut{Subnet: r.Subnet.String(), Gateway: r.Gateway.String(), IPRange: rangeText(r)}
			for name, a := range n.aux {
				if ip, err := netip.ParseAddr(a); err == nil && r.Subnet.Contains(ip) {
					if c.AuxiliaryAddresses == nil {
						c.AuxiliaryAddresses = map[string]string{}
					}
					c.AuxiliaryAddresses[name] = a
				}
			}
			cfg = append(cfg, c)
		}
	}
	return cfg
}

// rangeText writes a range as Docker's --ip-range CIDR when one gives
// exactly it, as start-end otherwise, and as "" for the whole subnet.
func rangeText(r iprange.Range) string {
	if r.RangeStart == iprange.FirstHost(r.Subnet) && r.RangeEnd == iprange.LastHost(r.Subnet) {
		return ""
	}
	for bits := r.RangeStart.BitLen(); bits >= r.Subnet.Bits(); bits-- {
		p := netip.PrefixFrom(r.RangeStart, bits).Masked()
		if !p.Contains(r.RangeEnd) {
			continue
		}
		if first, last := clampRange(p, r.Subnet); first == r.RangeStart && last == r.RangeEnd {
			return p.String()
		}
		break
	}
	return r.String()
}

// containers groups the leases by attachment, with the name and MAC the
// cache knows, else the lease's workload and the MAC of the live link in
// the lease's namespace; the records of LAN devices and the sticky holds
// go apart (holds are not listed).
func containers(n network, leases []lease, cache map[attachment]cached) (map[string]ctrOut, map[string]string) {
	ctrs := map[string]ctrOut{}
	var conflicts map[string]string
	for _, l := range leases {
		if !l.inUse() {
			if conflicts == nil {
				conflicts = map[string]string{}
			}
			conflicts[l.IP.String()] = l.Conflict
			continue
		}
		key := l.ContainerID
		if c, ok := ctrs[key]; ok && c.IfName != l.IfName {
			key += "/" + l.IfName // a second interface of one container
		}
		c := ctrs[key]
		if c.IfName == "" {
			info := cache[attachment{l.ContainerID, l.IfName}]
			c = ctrOut{Name: info.name, IfName: l.IfName, MacAddress: info.mac}
			if c.Name == "" {
				c.Name = l.Workload
			}
			if c.MacAddress == "" {
				c.MacAddress = liveMAC(l.Netns, l.IfName)
			}
			if strings.HasPrefix(l.ContainerID, shimPrefix) {
				c.Name = "(host shim)"
			}
		}
		addr := addrWithLen(n, l.IP)
		if l.IP.Is4() {
			c.IPv4Address = addr
		} else {
			c.IPv6Address = addr
		}
		ctrs[key] = c
	}
	return ctrs, conflicts
}

// addrWithLen writes ip with the prefix length of its subnet, as Docker does.
func addrWithLen(n network, ip netip.Addr) string {
	for _, s := range n.subnets() {
		if s.Contains(ip) {
			return netip.PrefixFrom(ip, s.Bits()).String()
		}
	}
	return ip.String()
}

// printInspect is the table form: the configuration, then one line per
// container.
func printInspect(e *env, o inspectOut) error {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintf(tw, "Name:\t%s\nFile:\t%s\nParent:\t%s (%s)\n", o.Name, o.ConfigFile, o.Options["parent"], o.Options["macvlan_mode"]) // errors surface at Flush
	for _, c := range o.IPAM.Config {
		line := "Subnet:\t" + c.Subnet + "  gateway " + c.Gateway
		if c.IPRange != "" {
			line += "  ip-range " + c.IPRange
		}
		for _, k := range sortedKeys(c.AuxiliaryAddresses) {
			line += "  aux " + k + "=" + c.AuxiliaryAddresses[k]
		}
		_, _ = fmt.Fprintln(tw, line) // errors surface at Flush
	}
	for _, k := range sortedKeys(o.Options) {
		if k != "parent" && k != "macvlan_mode" {
			_, _ = fmt.Fprintf(tw, "Option:\t%s=%s\n", k, o.Options[k]) // errors surface at Flush
		}
	}
	if o.Problem != "" {
		_, _ = fmt.Fprintf(tw, "Problem:\t%s\n", o.Problem) // errors surface at Flush
	}
	_, _ = fmt.Fprintln(tw, "\nCONTAINER ID\tNAME\tIFNAME\tMAC\tIPV4\tIPV6") // errors surface at Flush
	for _, id := range sortedKeys(o.Containers) {
		c := o.Containers[id]
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", shortID(id), dash(c.Name), c.IfName, dash(c.MacAddress), dash(c.IPv4Address), dash(c.IPv6Address)) // errors surface at Flush
	}
	for _, ip := range sortedKeys(o.LANConflicts) {
		_, _ = fmt.Fprintf(tw, "(LAN device)\t-\t-\t%s\t%s\t-\n", o.LANConflicts[ip], ip) // errors surface at Flush
	}
	return tw.Flush()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortID shortens a 64-hex container ID to Docker's 12 characters.
func shortID(id string) string {
	if len(id) == 64 && strings.Trim(id, "0123456789abcdef") == "" {
		return id[:12]
	}
	return id
}
