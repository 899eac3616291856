package netcmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ipam/ipamconf"
)

// network is one CNI network configuration file of the directory.
type network struct {
	name    string
	file    string
	created time.Time
	aux     map[string]string // Docker's --aux-address names
	maclan  bool              // one of its plugins is maclan
	conf    *config.NetConf   // the maclan plugin's configuration
	ipam    *ipamconf.Conf    // its IPAM's, when that is maclan-ipam
	// err says why the plugins would refuse the maclan configuration.
	err error
}

func (n network) isMaclan() bool { return n.maclan }

// parent is the macvlan's master ("" for the default route's interface).
func (n network) parent() string {
	if n.conf == nil {
		return ""
	}
	return n.conf.Master
}

// confExtensions are the files libcni reads from a configuration
// directory (libcni.ConfFiles).
var confExtensions = map[string]bool{".conf": true, ".conflist": true, ".json": true}

// loadNetworks reads every network configuration in dir, sorted by name.
// A missing directory holds no network; a file that is not a CNI
// configuration is skipped, as runtimes skip it.
func loadNetworks(dir string) ([]network, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("configuration directory: %w", err)
	}
	var nets []network
	for _, e := range entries {
		if !e.Type().IsRegular() || !confExtensions[filepath.Ext(e.Name())] {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		n, err := parseNetwork(b, path)
		if err != nil || n.name == "" {
			continue // not a CNI configuration: runtimes skip it too
		}
		if fi, err := e.Info(); err == nil {
			n.created = fi.ModTime()
		}
		nets = append(nets, n)
	}
	sort.SliceStable(nets, func(i, j int) bool { return nets[i].name < nets[j].name })
	return nets, nil
}

// findNetwork returns the maclan network called name in dir.
func findNetwork(dir, name string) (network, error) {
	nets, err := loadNetworks(dir)
	if err != nil {
		return network{}, err
	}
	for _, n := range nets {
		if n.name != name {
			continue
		}
		if !n.maclan {
			return n, fmt.Errorf("network %s (%s) is not a maclan network", name, n.file)
		}
		return n, nil
	}
	return network{}, notFoundError{name: name, dir: dir}
}

// notFoundError: no network of that name in the directory.
type notFoundError struct{ name, dir string }

func (e notFoundError) Error() string {
	return fmt.Sprintf("network %s not found in %s", e.name, e.dir)
}

// confTop is the part of a .conf or .conflist file read here.
type confTop struct {
	Name         string            `json:"name"`
	CNIVersion   string            `json:"cniVersion"`
	Type         string            `json:"type"` // a single-plugin .conf
	AuxAddresses map[string]string `json:"auxAddresses"`
	Plugins      []json.RawMessage `json:"plugins"`
}

// parseNetwork decodes a configuration file and, if it runs maclan, parses
// that plugin's configuration with the plugins' own parsers. The error is
// for a file that is not JSON; n.err for a maclan configuration that the
// plugins would refuse.
func parseNetwork(b []byte, file string) (network, error) {
	var top confTop
	if err := json.Unmarshal(b, &top); err != nil {
		return network{}, fmt.Errorf("decode %s: %w", file, err)
	}
	n := network{name: top.Name, file: file, aux: top.AuxAddresses}
	plugins := top.Plugins
	if top.Type != "" && plugins == nil {
		plugins = []json.RawMessage{b}
	}
	for _, raw := range plugins {
		var typ struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(raw, &typ) != nil || typ.Type != "maclan" {
			continue
		}
		n.maclan = true
		n.conf, n.ipam, n.err = parseMaclan(raw, top.Name, top.CNIVersion)
		break
	}
	return n, nil
}

// parseMaclan parses the maclan plugin's configuration as the plugin gets
// it: libcni adds the list's name and cniVersion to each plugin's object.
func parseMaclan(raw json.RawMessage, name, cniVersion string) (*config.NetConf, *ipamconf.Conf, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, nil, fmt.Errorf("decode the maclan plugin's configuration: %w", err)
	}
	for k, v := range map[string]string{"name": name, "cniVersion": cniVersion} {
		if v == "" {
			continue // a single .conf carries its own
		}
		js, err := json.Marshal(v)
		if err != nil {
			return nil, nil, err
		}
		obj[k] = js
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, nil, err
	}
	conf, err := config.ParseNetConf(b, "")
	if err != nil {
		return nil, nil, err
	}
	if conf.IPAM.Type != "maclan-ipam" {
		return conf, nil, nil
	}
	ipam, err := ipamconf.Parse(b, "")
	return conf, ipam, err
}
