// Package ipamconf decodes and validates the configuration of maclan-ipam:
// the "ipam" object of a net conf, the few top-level fields it reads, and
// the static requests of runtimeConfig, args and CNI_ARGS. It lives beside
// the allocator, not in pkg/config, so that maclan's own configuration
// depends on nothing of the IPAM's. Like pkg/config it makes no system
// calls; its errors wrap config.ErrInvalid (CNI code 7).
package ipamconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ipam/iprange"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// Defaults of maclan-ipam; the lock timeout's is store.DefaultLockTimeout.
const (
	DefaultDataDir = "/var/lib/cni/maclan"
	maxLockTimeout = 5 * time.Minute
	// A conflict record keeps an address that answered an ARP probe out of
	// use this long; then the next ADD that reaches it probes it again. Ten
	// minutes: a device that still answers costs one probe (at most 90 ms)
	// in one ADD every ten minutes, while a device that answers every probe
	// (proxy ARP, a hostile host) holds what it took for no longer than that.
	DefaultConflictLifetime = 10 * time.Minute
	minConflictLifetime     = time.Second
	maxConflictLifetime     = 30 * 24 * time.Hour
)

// Conf is the configuration of maclan-ipam. The JSON fields are those of
// the "ipam" object, a superset of the reference host-local plugin's: a
// host-local configuration is accepted unchanged. The fields tagged "-" come
// from the rest of the net conf and from CNI_ARGS.
type Conf struct {
	Type string `json:"type"`
	// Ranges is a list of range sets; one address is taken from each set.
	// The legacy single range (subnet, rangeStart, rangeEnd, gateway beside
	// "type") is folded in as the first set.
	Ranges     []iprange.RangeSet `json:"ranges"`
	Routes     []*types.Route     `json:"routes"`
	DataDir    string             `json:"dataDir"`
	ResolvConf string             `json:"resolvConf"`
	// Exclude lists addresses and CIDRs never handed out.
	Exclude     []Exclude `json:"exclude"`
	Store       StoreConf `json:"store"`
	LockTimeout Duration  `json:"lockTimeout"`
	// Lease lifecycle (lifecycle.go).
	ReclaimAfterReboot *bool    `json:"reclaimAfterReboot"`
	StaleAfter         Duration `json:"staleAfter"`
	StickyFor          Duration `json:"stickyFor"`
	// ConflictLifetime is how long a conflict record lasts (with conflict
	// detection on): see DefaultConflictLifetime.
	ConflictLifetime Duration `json:"conflictLifetime"`

	// Name is the network name (the net conf's top-level "name").
	Name       string `json:"-"`
	CNIVersion string `json:"-"`
	// Requested are the static addresses asked for, from all sources.
	Requested []Request `json:"-"`
	// Attachments is the GC list of attachments still in use; it is nil
	// when the net conf carries no list, which is not the same as empty.
	Attachments []types.GCAttachment `json:"-"`
	// ConflictDetection (the net conf's top-level "conflictDetection"):
	// probe each new IPv4 address on the LAN before handing it out. The
	// probe goes out of Master (top-level "master"; empty: the interface of
	// the default route), unless LinkInContainer puts it out of reach.
	ConflictDetection bool   `json:"-"`
	Master            string `json:"-"`
	LinkInContainer   bool   `json:"-"`
	// Workload and WorkloadUID name what the runtime runs in the container
	// (lifecycle.go); empty when it does not say.
	Workload    string `json:"-"`
	WorkloadUID string `json:"-"`
	// HostAttachment (CNI_ARGS MACLAN_HOST_ATTACHMENT=true, sent by maclan
	// for its host shim): the attachment lives in the host namespace, not
	// in CNI_NETNS, which its lease therefore does not record.
	HostAttachment bool `json:"-"`
}

// StoreConf selects where leases are kept.
type StoreConf struct {
	Type string `json:"type"` // "disk" (default) or "etcd"
	// Dir is, for disk, the data directory (default DataDir); for etcd,
	// where the per-host lock file is kept (same default).
	Dir string `json:"dir"`
	// The etcd store; see etcd.go.
	EtcdConf
}

// Exclude is an address ("10.0.0.7") or a CIDR ("10.0.0.0/28").
type Exclude struct{ netip.Prefix }

// UnmarshalText accepts an address or a CIDR.
func (e *Exclude) UnmarshalText(b []byte) error {
	p, err := iprange.ParsePrefixOrAddr(string(b))
	if err != nil {
		return err
	}
	e.Prefix = p
	return nil
}

// Duration is a duration written as a Go duration string ("10s",
// "1m30s") or a number of seconds.
type Duration time.Duration

// UnmarshalJSON accepts "10s" or 10.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return errors.New("want a duration such as \"10s\" or a number of seconds")
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// Request is one statically requested address and where it came from,
// so that an error can say which source asked for it.
type Request struct {
	IP     netip.Addr
	Source string
}

// envelope is the part of the net conf outside "ipam" that maclan-ipam
// reads. Everything else (the main plugin's "master", "mode", ...) is
// ignored.
type envelope struct {
	CNIVersion    string          `json:"cniVersion"`
	Name          string          `json:"name"`
	IPAM          json.RawMessage `json:"ipam"`
	RuntimeConfig struct {
		// The "ips" capability (CONVENTIONS.md), e.g. filled by Multus.
		IPs []string `json:"ips"`
		// The "ipRanges" capability, as host-local honours it.
		IPRanges []iprange.RangeSet `json:"ipRanges"`
	} `json:"runtimeConfig"`
	Args struct {
		CNI struct {
			IPs      []string `json:"ips"`
			Workload string   `json:"workload"`
		} `json:"cni"`
		// The Mesos CNI isolator passes its NetworkInfo here.
		Mesos struct {
			NetworkInfo struct {
				Name        string `json:"name"`
				IPAddresses []struct {
					IPAddress string `json:"ip_address"`
				} `json:"ip_addresses"`
				Labels struct {
					Labels []struct {
						Key   string `json:"key"`
						Value string `json:"value"`
					} `json:"labels"`
				} `json:"labels"`
			} `json:"network_info"`
		} `json:"org.apache.mesos"`
	} `json:"args"`
	// Read from the main plugin's fields for conflict detection.
	ConflictDetection bool   `json:"conflictDetection"`
	Master            string `json:"master"`
	LinkInContainer   bool   `json:"linkInContainer"`
	// GC (SPEC.md 1.1): the attachments still in use.
	ValidAttachments *[]types.GCAttachment `json:"cni.dev/valid-attachments"`
	OldAttachments   *[]types.GCAttachment `json:"cni.dev/attachments"`
}

func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, config.ErrInvalid)...)
}

// Decode decodes the net conf and checks only what DEL and GC
// need: the network name, the store and the lock timeout. A DEL must work
// even if the ranges of a network have since become invalid.
func Decode(stdin []byte) (*Conf, error) {
	c, _, err := decode(stdin)
	return c, err
}

func decode(stdin []byte) (*Conf, *envelope, error) {
	var env envelope
	if err := json.Unmarshal(stdin, &env); err != nil {
		return nil, nil, invalid("decode net conf: %w", err)
	}
	if len(env.IPAM) == 0 || string(env.IPAM) == "null" {
		return nil, nil, invalid("net conf has no \"ipam\" object")
	}
	c := &Conf{}
	if err := json.Unmarshal(env.IPAM, c); err != nil {
		return nil, nil, invalid("decode ipam: %w", err)
	}
	c.Name, c.CNIVersion = env.Name, env.CNIVersion
	c.ConflictDetection, c.Master, c.LinkInContainer = env.ConflictDetection, env.Master, env.LinkInContainer
	if err := store.ValidateName("network name", c.Name); err != nil {
		return nil, nil, invalid("name: %w", err)
	}

	switch c.Store.Type {
	case "", "disk":
		c.Store.Type = "disk"
	case "etcd":
		if err := c.Store.EtcdConf.validate(); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, invalid("ipam.store.type %q is unknown (want \"disk\" or \"etcd\")", c.Store.Type)
	}
	if c.Store.Type != "etcd" && !c.Store.EtcdConf.empty() {
		return nil, nil, invalid("ipam.store: endpoints, prefix, dialTimeout, requestTimeout and tls are etcd fields, but store.type is %q", c.Store.Type)
	}
	switch {
	case c.Store.Dir == "" && c.DataDir == "":
		c.Store.Dir = DefaultDataDir
	case c.Store.Dir == "":
		c.Store.Dir = c.DataDir
	case c.DataDir != "" && filepath.Clean(c.DataDir) != filepath.Clean(c.Store.Dir):
		return nil, nil, invalid("ipam.dataDir %q and ipam.store.dir %q disagree", c.DataDir, c.Store.Dir)
	}
	if !filepath.IsAbs(c.Store.Dir) {
		return nil, nil, invalid("ipam.store.dir %q is not an absolute path", c.Store.Dir)
	}
	c.Store.Dir = filepath.Clean(c.Store.Dir)
	c.DataDir = c.Store.Dir

	switch d := time.Duration(c.LockTimeout); {
	case d == 0:
		c.LockTimeout = Duration(store.DefaultLockTimeout)
	case d < 0 || d > maxLockTimeout:
		return nil, nil, invalid("ipam.lockTimeout %s is outside (0, %s]", d, maxLockTimeout)
	}

	if err := c.lifecycleDefaults(); err != nil {
		return nil, nil, err
	}
	switch d := time.Duration(c.ConflictLifetime); {
	case d == 0:
		c.ConflictLifetime = Duration(DefaultConflictLifetime)
	case d < minConflictLifetime || d > maxConflictLifetime:
		return nil, nil, invalid("ipam.conflictLifetime %s is outside [%s, %s]", d, minConflictLifetime, maxConflictLifetime)
	}

	switch {
	case env.ValidAttachments != nil:
		c.Attachments = append([]types.GCAttachment{}, *env.ValidAttachments...)
	case env.OldAttachments != nil:
		c.Attachments = append([]types.GCAttachment{}, *env.OldAttachments...)
	}
	return c, &env, nil
}

// Parse decodes the whole net conf maclan-ipam receives on stdin,
// merges the static requests from runtimeConfig, args and CNI_ARGS, applies
// the host-local defaults and validates everything. Every failure wraps
// ErrInvalid and names the field and value at fault.
func Parse(stdin []byte, cniArgs string) (*Conf, error) {
	c, env, err := decode(stdin)
	if err != nil {
		return nil, err
	}

	// Range sets: runtime ipRanges first, then the legacy single range,
	// then "ranges", the order in which host-local considers them.
	var legacy iprange.Range
	if err := json.Unmarshal(env.IPAM, &legacy); err != nil {
		return nil, invalid("decode ipam: %w", err)
	}
	var sets []iprange.RangeSet
	sets = append(sets, env.RuntimeConfig.IPRanges...)
	if legacy.Subnet.IsValid() {
		sets = append(sets, iprange.RangeSet{legacy})
	} else if legacy.RangeStart.IsValid() || legacy.RangeEnd.IsValid() || legacy.Gateway.IsValid() {
		return nil, invalid("ipam: rangeStart, rangeEnd or gateway given without subnet")
	}
	c.Ranges = append(sets, c.Ranges...)
	if len(c.Ranges) == 0 {
		return nil, invalid("ipam.ranges: no range given")
	}
	if err := canonicalizeSets(c.Ranges); err != nil {
		return nil, err
	}
	v4, v6 := 0, 0
	for _, set := range c.Ranges {
		if set.Is4() {
			v4++
		} else {
			v6++
		}
	}
	// Results before 0.3.0 hold one address per family.
	if v4 > 1 || v6 > 1 {
		if ok, err := version.GreaterThanOrEqualTo(c.CNIVersion, "0.3.0"); err != nil || !ok {
			return nil, invalid("cniVersion %q allows one range set per address family, got %d IPv4 and %d IPv6", c.CNIVersion, v4, v6)
		}
	}
	for i, r := range c.Routes {
		if r == nil || r.Dst.IP == nil {
			return nil, invalid("ipam.routes[%d]: missing dst", i)
		}
	}

	if err := c.collectRequests(env, cniArgs); err != nil {
		return nil, err
	}
	if err := c.collectWorkload(env, cniArgs); err != nil {
		return nil, err
	}
	return c, c.validateRequests()
}

// canonicalizeSets canonicalizes the range sets and checks that no two
// overlap. Its errors are those of checking each set in order against all
// the sets before it, but the check sorts the ranges once (iprange.
// FirstOverlap) instead of comparing every pair: a configuration can hold
// tens of thousands of ranges.
func canonicalizeSets(sets []iprange.RangeSet) error {
	n := 0
	var bad error
	for ; n < len(sets); n++ {
		if err := sets[n].Canonicalize(); err != nil {
			bad = invalid("ipam.ranges[%d]: %w", n, err)
			break
		}
	}
	if i, j, ok := iprange.FirstOverlap(sets[:n]); ok {
		return invalid("ipam.ranges[%d] overlaps ipam.ranges[%d]", i, j)
	}
	return bad
}

func (c *Conf) collectRequests(env *envelope, cniArgs string) error {
	seen := map[netip.Addr]bool{}
	add := func(source, s string) error {
		ip, err := iprange.ParseAddrOrPrefix(strings.TrimSpace(s))
		if err != nil {
			return invalid("%s: %w", source, err)
		}
		if seen[ip] {
			return nil // the same address from two sources
		}
		seen[ip] = true
		c.Requested = append(c.Requested, Request{IP: ip, Source: source})
		return nil
	}
	for _, s := range env.RuntimeConfig.IPs {
		if err := add("runtimeConfig.ips", s); err != nil {
			return err
		}
	}
	for _, s := range env.Args.CNI.IPs {
		if err := add("args.cni.ips", s); err != nil {
			return err
		}
	}
	for _, a := range env.Args.Mesos.NetworkInfo.IPAddresses {
		if a.IPAddress == "" {
			continue // Mesos asks for "an address of this protocol"
		}
		if err := add(`args["org.apache.mesos"].network_info.ip_addresses`, a.IPAddress); err != nil {
			return err
		}
	}
	args, err := config.ParseCNIArgs(cniArgs) // unknown keys (K8S_POD_NAME, MAC, ...) are ignored
	if err != nil {
		return err
	}
	if v, ok := args["IP"]; ok && v != "" {
		for _, s := range strings.Split(v, ",") {
			if err := add("CNI_ARGS IP", s); err != nil {
				return err
			}
		}
	}
	return nil
}

// validateRequests checks that each requested address can be handed out:
// inside a range, not reserved, not excluded, at most one per range set.
// The ranges and exclusions are indexed once, so that each check is a
// binary search.
func (c *Conf) validateRequests() error {
	if len(c.Requested) == 0 {
		return nil
	}
	ranges := iprange.NewIndex(c.Ranges)
	excluded := iprange.NewExclusions(c.ExcludedPrefixes())
	taken := map[int]netip.Addr{}
	for _, r := range c.Requested {
		set, idx := ranges.Find(r.IP)
		if set < 0 {
			return invalid("%s: requested address %s is in no range of ipam.ranges", r.Source, r.IP)
		}
		if rg := c.Ranges[set][idx]; rg.Reserved(r.IP) {
			return invalid("%s: requested address %s is the network, broadcast or gateway address of %s", r.Source, r.IP, rg.Subnet)
		}
		if ex, _ := excluded.Excluded(r.IP); ex {
			return invalid("%s: requested address %s is excluded by ipam.exclude", r.Source, r.IP)
		}
		if other, dup := taken[set]; dup {
			return invalid("%s: requested addresses %s and %s are both in ipam.ranges[%d]; one address per range set", r.Source, other, r.IP, set)
		}
		taken[set] = r.IP
	}
	return nil
}

// ExcludedPrefixes returns Exclude as prefixes.
func (c *Conf) ExcludedPrefixes() []netip.Prefix {
	ps := make([]netip.Prefix, len(c.Exclude))
	for i, e := range c.Exclude {
		ps[i] = e.Prefix
	}
	return ps
}
