package doctor

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ipam/ipamconf"
	"github.com/maclan-cni/maclan/pkg/ipam/iprange"
)

// pluginType is the main plugin's "type".
const pluginType = "maclan"

// target is one thing to diagnose: a maclan network found in the CNI
// configuration directory, or a master and gateway named on the command
// line.
type target struct {
	network  string // "" for --master
	file     string
	conf     *config.NetConf // nil for --master
	confErr  error           // the configuration does not parse
	ipam     *ipamconf.Conf  // nil: no IPAM with ranges we can read
	ipamErr  error
	master   string // "" : the default-route interface
	gateways []netip.Addr
}

// loadTargets reads the CNI configuration files in dir (*.conflist, *.conf,
// *.json, as libcni does) and returns the maclan networks among them, all
// of them or those named.
func loadTargets(dir string, names []string) ([]*target, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read CNI configuration directory: %w", err)
	}
	var files []string
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".conflist", ".conf", ".json":
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(files) // libcni's order: the first file of a name wins
	var targets []*target
	seen := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		t, err := targetFromFile(f, b)
		if err != nil || t == nil || seen[t.network] {
			continue // not a maclan network, or not JSON: libcni's business
		}
		if len(names) > 0 && !slices.Contains(names, t.network) {
			continue
		}
		seen[t.network] = true
		targets = append(targets, t)
	}
	for _, n := range names {
		if !seen[n] {
			return nil, fmt.Errorf("no maclan network %q in %s", n, dir)
		}
	}
	return targets, nil
}

// targetFromFile returns the maclan network of one configuration file
// (a list, or a single plugin's configuration), or nil if it has none.
func targetFromFile(file string, b []byte) (*target, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, err
	}
	plugins := []json.RawMessage{b}
	if raw, isList := top["plugins"]; isList {
		if err := json.Unmarshal(raw, &plugins); err != nil {
			return nil, err
		}
	}
	for _, p := range plugins {
		var plugin map[string]json.RawMessage
		if err := json.Unmarshal(p, &plugin); err != nil {
			return nil, err
		}
		var typ string
		_ = json.Unmarshal(plugin["type"], &typ) // not a string: not ours
		if typ != pluginType {
			continue
		}
		// The plugin's own configuration, as libcni hands it over: the
		// list's name and cniVersion injected.
		for _, k := range []string{"name", "cniVersion"} {
			if v, ok := top[k]; ok {
				plugin[k] = v
			}
		}
		netconf, err := json.Marshal(plugin)
		if err != nil {
			return nil, err
		}
		return newTarget(file, netconf), nil
	}
	return nil, nil
}

// newTarget parses a maclan plugin configuration.
func newTarget(file string, netconf []byte) *target {
	t := &target{file: file}
	t.conf, t.confErr = config.ParseNetConf(netconf, "")
	if t.confErr != nil {
		if c, err := config.DecodeNetConf(netconf); err == nil {
			t.network, t.master = c.Name, c.Master
		}
		return t
	}
	t.network, t.master = t.conf.Name, t.conf.Master
	switch t.conf.IPAM.Type {
	case "maclan-ipam", "host-local":
		t.ipam, t.ipamErr = ipamconf.Parse(netconf, "")
	}
	if t.ipam != nil {
		t.gateways = rangeGateways(t.ipam)
	}
	return t
}

// rangeGateways returns the gateway of the first range of each family.
func rangeGateways(c *ipamconf.Conf) []netip.Addr {
	var gws []netip.Addr
	seen4, seen6 := false, false
	for _, set := range c.Ranges {
		gw := set[0].Gateway
		switch {
		case !gw.IsValid():
		case gw.Is4() && !seen4:
			seen4 = true
			gws = append(gws, gw)
		case gw.Is6() && !seen6:
			seen6 = true
			gws = append(gws, gw)
		}
	}
	return gws
}

// parseGateways parses --gateway IP[,IP].
func parseGateways(s string) ([]netip.Addr, error) {
	if s == "" {
		return nil, nil
	}
	var gws []netip.Addr
	for _, f := range strings.Split(s, ",") {
		ip, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("--gateway %q: %w", f, err)
		}
		gws = append(gws, ip.Unmap())
	}
	return gws, nil
}

var errNoNetwork = errors.New("no maclan network found")

// ipamRanges returns the range sets of the network's IPAM, if known.
func (t *target) ipamRanges() []iprange.RangeSet {
	if t.ipam == nil {
		return nil
	}
	return t.ipam.Ranges
}
