package config

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// Macvlan modes, as the kernel names them (ip-link(8), "macvlan").
const (
	ModeBridge   = "bridge"
	ModePrivate  = "private"
	ModeVEPA     = "vepa"
	ModePassthru = "passthru"
)

// NetConf is the configuration of the maclan plugin. Every field that the
// reference macvlan plugin accepts has the same name and meaning here, so a
// user switches by changing "type".
type NetConf struct {
	types.NetConf

	// Master is the host interface the macvlan hangs off. Empty means the
	// interface of the default route, looked up when the plugin acts.
	Master string `json:"master,omitempty"`
	// Mode is one of bridge (default), private, vepa or passthru.
	Mode string `json:"mode,omitempty"`
	// MTU of the container interface; 0 inherits the master's.
	MTU int `json:"mtu,omitempty"`
	// MAC is the container interface's address. After ParseNetConf it holds
	// the effective value: runtimeConfig.mac, then CNI_ARGS MAC=, then this.
	MAC string `json:"mac,omitempty"`
	// LinkInContainer: the master lives in the container's namespace.
	LinkInContainer bool `json:"linkInContainer,omitempty"`
	// BCQueueLen is the macvlan broadcast queue length; 0 keeps the default.
	BCQueueLen uint32 `json:"bcqueuelen,omitempty"`

	// HostShim lets the host reach its containers (see pkg/shim).
	HostShim *HostShim `json:"hostShim,omitempty"`
	// LogFile and LogLevel: see package logging. Without a file, warnings
	// and failures go to stderr, which the runtime records.
	LogFile  string `json:"logFile,omitempty"`
	LogLevel string `json:"logLevel,omitempty"`
	// MACFromIP derives the container's MAC from its IPv4 address when no
	// explicit MAC is given, so that a container re-created with the same
	// address keeps its MAC and neighbour caches stay right.
	MACFromIP bool `json:"macFromIP,omitempty"`

	RuntimeConfig struct {
		MAC string `json:"mac,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

// HostShim configures the host's own macvlan on the master.
type HostShim struct {
	Enabled bool `json:"enabled"`
	// Address is the host's address on the shim, an IP or a CIDR whose
	// prefix length is ignored (the shim holds a host route only). Empty:
	// the shim takes its addresses, one per range set, from the network's
	// IPAM, as an attachment of its own (ShimFromIPAM).
	Address string `json:"address,omitempty"`
}

// ShimFromIPAM reports whether the shim's addresses come from the IPAM.
func (c *NetConf) ShimFromIPAM() bool { return c.ShimEnabled() && c.HostShim.Address == "" }

// ShimEnabled reports whether the host shim is on.
func (c *NetConf) ShimEnabled() bool { return c.HostShim != nil && c.HostShim.Enabled }

// ShimAddress parses HostShim.Address.
func (c *NetConf) ShimAddress() (netip.Addr, error) {
	a := c.HostShim.Address
	if p, err := netip.ParsePrefix(a); err == nil {
		return p.Addr(), nil
	}
	ip, err := netip.ParseAddr(a)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("field \"hostShim.address\": %q is not an IP address or CIDR: %w", a, ErrInvalid)
	}
	return ip.Unmap(), nil
}

// DecodeNetConf decodes the configuration without validating it. DEL, GC and
// STATUS use it: they must work with a configuration that ADD would refuse
// today (a master that has gone, say) and read only the fields they need.
func DecodeNetConf(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, fmt.Errorf("decode network configuration: %w: %w", ErrInvalid, err)
	}
	return conf, nil
}

// ParseNetConf decodes stdin, merges the MAC sources in order of precedence
// (runtimeConfig.mac > CNI_ARGS MAC= > "mac") and validates the result.
func ParseNetConf(stdin []byte, cniArgs string) (*NetConf, error) {
	conf, err := DecodeNetConf(stdin)
	if err != nil {
		return nil, err
	}
	args, err := ParseCNIArgs(cniArgs)
	if err != nil {
		return nil, err
	}
	macField := "mac"
	if mac := args["MAC"]; mac != "" {
		conf.MAC, macField = mac, "CNI_ARGS MAC"
	}
	if conf.RuntimeConfig.MAC != "" {
		conf.MAC, macField = conf.RuntimeConfig.MAC, "runtimeConfig.mac"
	}
	if err := conf.validate(macField); err != nil {
		return nil, err
	}
	return conf, nil
}

func (c *NetConf) validate(macField string) error {
	if c.Name == "" {
		return fmt.Errorf("field \"name\" is empty: %w", ErrInvalid)
	}
	switch c.Mode {
	case "":
		c.Mode = ModeBridge
	case ModeBridge, ModePrivate, ModeVEPA, ModePassthru:
	default:
		return fmt.Errorf("field \"mode\": unknown macvlan mode %q (want bridge, private, vepa or passthru): %w", c.Mode, ErrInvalid)
	}
	if c.MTU < 0 {
		return fmt.Errorf("field \"mtu\": %d is negative: %w", c.MTU, ErrInvalid)
	}
	if c.Master != "" {
		if err := validIfName(c.Master); err != nil {
			return fmt.Errorf("field \"master\": %w: %w", err, ErrInvalid)
		}
	}
	if c.MAC != "" {
		if _, err := ParseMAC(c.MAC); err != nil {
			return fmt.Errorf("%s: %w: %w", macField, err, ErrInvalid)
		}
	}
	if c.ShimEnabled() {
		switch c.Mode {
		case ModePassthru:
			return fmt.Errorf("field \"hostShim\": passthru mode gives the whole master to one container, leaving no room for the host's shim: %w", ErrInvalid)
		case ModePrivate:
			return fmt.Errorf("field \"hostShim\": private mode stops siblings on the master from talking, the shim among them: %w", ErrInvalid)
		}
		if c.LinkInContainer {
			return fmt.Errorf("field \"hostShim\": the shim lives in the host namespace, but linkInContainer puts the master in the container's: %w", ErrInvalid)
		}
		if c.HostShim.Address != "" {
			if _, err := c.ShimAddress(); err != nil {
				return err
			}
			return nil
		}
		// The address comes from the IPAM, which must be one that gives
		// an attachment of the shim's own an address of its own.
		switch c.IPAM.Type {
		case "":
			return fmt.Errorf("field \"hostShim.address\" is empty and there is no ipam to take the shim's address from: %w", ErrInvalid)
		case "static", "dhcp":
			return fmt.Errorf("field \"hostShim.address\" is empty, and the %s IPAM cannot lease the shim an address of its own (static gives every attachment the configured addresses; dhcp would need a client on the shim): set the address: %w", c.IPAM.Type, ErrInvalid)
		}
	}
	return nil
}

// ParseMAC parses an Ethernet address that an interface can carry: 48 bits,
// unicast (I/G bit clear, IEEE 802 section 8.2) and not all zeroes.
func ParseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("invalid MAC address %q", s)
	}
	switch {
	case len(mac) != 6:
		return nil, fmt.Errorf("MAC address %q is not a 48-bit Ethernet address", s)
	case mac[0]&1 == 1:
		return nil, fmt.Errorf("MAC address %q is a multicast address", s)
	case mac.String() == "00:00:00:00:00:00":
		return nil, fmt.Errorf("MAC address %q is all zeroes", s)
	}
	return mac, nil
}

// validIfName applies the kernel's rules for interface names
// (net/core/dev.c, dev_valid_name): 1..15 bytes, not "." or "..", no '/',
// ':' or white space.
func validIfName(name string) error {
	switch {
	case len(name) == 0:
		return fmt.Errorf("interface name is empty")
	case len(name) > 15:
		return fmt.Errorf("interface name %q is longer than 15 bytes", name)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed", name)
	case strings.ContainsAny(name, "/: \t\n\v\f\r"):
		return fmt.Errorf("interface name %q contains '/', ':' or white space", name)
	}
	return nil
}

// ParseCNIArgs parses CNI_ARGS ("K1=V1;K2=V2", SPEC.md "Parameters"). Every
// key is accepted: keys such as IP= or K8S_POD_NAME= are meant for the IPAM
// or the runtime and pass through untouched. A pair without '=' or with an
// empty key is an error.
func ParseCNIArgs(s string) (map[string]string, error) {
	args := map[string]string{}
	if s == "" {
		return args, nil
	}
	for _, pair := range strings.Split(s, ";") {
		if pair == "" {
			continue // tolerate a trailing ';'
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("CNI_ARGS pair %q is not KEY=VALUE: %w", pair, ErrInvalidArgs)
		}
		args[k] = v
	}
	return args, nil
}
