package netcmd

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ipam/ipamconf"
)

// runMain runs "maclan network ARGS" and returns its exit status and output.
func runMain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestCreateFlags: Docker's command lines, flags before or after the name,
// give the configuration Docker's flags mean.
func TestCreateFlags(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, c conflistFile)
	}{
		{
			name: "Docker's dual-stack walk-through, flags before the name",
			args: []string{"-d", "macvlan", "--subnet", "192.168.1.0/24", "--gateway=192.168.1.1", "--ip-range", "192.168.1.192/27",
				"--aux-address", "router=192.168.1.5", "--ipv6", "--subnet", "2001:db8:1::/64", "--gateway", "2001:db8:1::1",
				"-o", "parent=eth0", "-o", "macvlan_mode=private", "lan"},
			check: func(t *testing.T, c conflistFile) {
				p := c.Plugins[0]
				if p.Master != "eth0" || p.Mode != "private" || c.Name != "lan" {
					t.Errorf("got master %q mode %q name %q, want eth0 private lan", p.Master, p.Mode, c.Name)
				}
				r := p.IPAM.Ranges
				if len(r) != 2 || r[0][0].RangeStart.String() != "192.168.1.192" || r[0][0].RangeEnd.String() != "192.168.1.223" ||
					r[0][0].Gateway.String() != "192.168.1.1" || r[1][0].Subnet.String() != "2001:db8:1::/64" {
					t.Errorf("got ranges %+v", r)
				}
				if len(p.IPAM.Exclude) != 1 || p.IPAM.Exclude[0] != "192.168.1.5" || c.AuxAddresses["router"] != "192.168.1.5" {
					t.Errorf("got exclude %v aux %v, want 192.168.1.5 named router", p.IPAM.Exclude, c.AuxAddresses)
				}
				if len(p.IPAM.Routes) != 2 || !p.Capabilities["ips"] || !p.Capabilities["mac"] {
					t.Errorf("got routes %v capabilities %v, want two default routes, ips and mac", p.IPAM.Routes, p.Capabilities)
				}
			},
		},
		{
			name: "name first, flags after, -oVALUE and --opt=",
			args: []string{"lan", "--subnet=10.0.0.0/24", "-oparent=eth1", "--opt=macvlan_mode=vepa", "--opt", "mtu=9000"},
			check: func(t *testing.T, c conflistFile) {
				p := c.Plugins[0]
				if p.Master != "eth1" || p.Mode != "vepa" || p.MTU != 9000 {
					t.Errorf("got %q %q %d, want eth1 vepa 9000", p.Master, p.Mode, p.MTU)
				}
				if p.IPAM.Ranges[0][0].RangeStart.IsValid() {
					t.Errorf("without --ip-range got rangeStart %s, want the whole subnet", p.IPAM.Ranges[0][0].RangeStart)
				}
			},
		},
		{
			name: "an --ip-range covering the network address starts after it",
			args: []string{"lan", "--subnet", "10.0.0.0/24", "--ip-range", "10.0.0.0/25"},
			check: func(t *testing.T, c conflistFile) {
				if r := c.Plugins[0].IPAM.Ranges[0][0]; r.RangeStart.String() != "10.0.0.1" || r.RangeEnd.String() != "10.0.0.127" {
					t.Errorf("got %s, want 10.0.0.1-10.0.0.127", r)
				}
			},
		},
		{
			name: "two IPv4 subnets form one range set: one address per container",
			args: []string{"lan", "--subnet", "10.0.0.0/24", "--subnet", "10.0.1.0/24", "--gateway", "10.0.1.254"},
			check: func(t *testing.T, c conflistFile) {
				r := c.Plugins[0].IPAM.Ranges
				if len(r) != 1 || len(r[0]) != 2 || r[0][1].Gateway.String() != "10.0.1.254" {
					t.Errorf("got %+v, want one set of two ranges, the second with gateway 10.0.1.254", r)
				}
			},
		},
		{
			name: "maclan's own flags",
			args: []string{"lan", "--subnet", "10.0.0.0/24", "--host-shim-address", "10.0.0.250", "--conflict-detection", "--mac-from-ip",
				"--etcd-endpoints", "http://10.0.0.5:2379", "--data-dir", "/var/lib/x"},
			check: func(t *testing.T, c conflistFile) {
				p := c.Plugins[0]
				if p.HostShim == nil || !p.HostShim.Enabled || p.HostShim.Address != "10.0.0.250" || !p.ConflictDetection || !p.MACFromIP {
					t.Errorf("got hostShim %+v conflict %v macFromIP %v", p.HostShim, p.ConflictDetection, p.MACFromIP)
				}
				if p.IPAM.Store == nil || p.IPAM.Store.Type != "etcd" || p.IPAM.Store.Endpoints[0] != "http://10.0.0.5:2379" || p.IPAM.DataDir != "/var/lib/x" {
					t.Errorf("got store %+v dataDir %q", p.IPAM.Store, p.IPAM.DataDir)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			code, out, errOut := runMain(t, append([]string{"create", "--conf-dir", dir}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			name := strings.TrimSpace(out)
			b, err := os.ReadFile(filepath.Join(dir, name+".conflist"))
			if err != nil {
				t.Fatal(err)
			}
			var c conflistFile
			if err := json.Unmarshal(b, &c); err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
			// What was written is what the plugins accept.
			n, err := parseNetwork(b, "x")
			if err != nil || n.err != nil || !n.maclan {
				t.Errorf("the plugins' parsers: %v %v (maclan %v)", err, n.err, n.maclan)
			}
		})
	}
}

// TestCreateRefuses: Docker-like mistakes get exact, Docker-like messages
// and write nothing.
func TestCreateRefuses(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no name", []string{"--subnet", "10.0.0.0/24"}, 2, `"create" requires exactly 1 argument (the network name), got 0`},
		{"two names", []string{"a", "b", "--subnet", "10.0.0.0/24"}, 2, `"create" requires exactly 1 argument (the network name), got 2`},
		{"unknown flag", []string{"lan", "--subnet", "10.0.0.0/24", "--attachable"}, 2, "unknown flag: --attachable"},
		{"flag without value", []string{"lan", "--subnet"}, 2, "flag needs an argument: --subnet"},
		{"bad boolean", []string{"lan", "--subnet", "10.0.0.0/24", "--ipv6=maybe"}, 2, `invalid argument "maybe" for --ipv6: want true or false`},
		{"bad name", []string{"../x", "--subnet", "10.0.0.0/24"}, 2, "network name"},
		{"ipvlan", []string{"lan", "-d", "ipvlan", "--subnet", "10.0.0.0/24"}, 2, `driver "ipvlan": maclan makes macvlan networks only (-d macvlan)`},
		{"no subnet", []string{"lan"}, 2, "--subnet is required: give the subnet of your LAN (maclan does not pick a private pool as Docker does)"},
		{"bad subnet", []string{"lan", "--subnet", "10.0.0/24"}, 2, `invalid --subnet "10.0.0/24": want a CIDR such as 192.168.1.0/24`},
		{"host bits", []string{"lan", "--subnet", "10.0.0.5/24"}, 2, "invalid --subnet 10.0.0.5/24: host bits are set; did you mean 10.0.0.0/24?"},
		{"overlapping subnets", []string{"lan", "--subnet", "10.0.0.0/16", "--subnet", "10.0.1.0/24"}, 2, "--subnet 10.0.1.0/24 overlaps --subnet 10.0.0.0/16"},
		{"IPv6 subnet without --ipv6", []string{"lan", "--subnet", "2001:db8::/64"}, 2, "an IPv6 --subnet needs --ipv6, as with Docker"},
		{"--ipv6 without IPv6 subnet", []string{"lan", "--subnet", "10.0.0.0/24", "--ipv6"}, 2, "--ipv6 needs an IPv6 --subnet (maclan does not pick one)"},
		{"gateway outside", []string{"lan", "--subnet", "10.0.0.0/24", "--gateway", "10.0.1.1"}, 2, "no --subnet contains --gateway 10.0.1.1"},
		{"two gateways", []string{"lan", "--subnet", "10.0.0.0/24", "--gateway", "10.0.0.1", "--gateway", "10.0.0.2"}, 2, "--gateway 10.0.0.1 and --gateway 10.0.0.2 are both in --subnet 10.0.0.0/24: one gateway per subnet"},
		{"gateway is the broadcast", []string{"lan", "--subnet", "10.0.0.0/24", "--gateway", "10.0.0.255"}, 2, "--gateway 10.0.0.255 is the network or broadcast address of --subnet 10.0.0.0/24"},
		{"range outside", []string{"lan", "--subnet", "10.0.0.0/24", "--ip-range", "10.0.1.0/28"}, 2, "no --subnet contains --ip-range 10.0.1.0/28"},
		{"range wider than subnet", []string{"lan", "--subnet", "10.0.0.0/24", "--ip-range", "10.0.0.0/16"}, 2, "no --subnet contains --ip-range 10.0.0.0/16"},
		{"two ranges", []string{"lan", "--subnet", "10.0.0.0/24", "--ip-range", "10.0.0.0/28", "--ip-range", "10.0.0.64/28"}, 2, "--ip-range 10.0.0.0/28 and --ip-range 10.0.0.64/28 are both in --subnet 10.0.0.0/24: one range per subnet"},
		{"range of the broadcast only", []string{"lan", "--subnet", "10.0.0.0/24", "--ip-range", "10.0.0.255/32"}, 2, "--ip-range 10.0.0.255/32 holds no address a container may have in --subnet 10.0.0.0/24"},
		{"aux without name", []string{"lan", "--subnet", "10.0.0.0/24", "--aux-address", "10.0.0.5"}, 2, `invalid --aux-address "10.0.0.5": want NAME=IP`},
		{"aux outside", []string{"lan", "--subnet", "10.0.0.0/24", "--aux-address", "r=10.9.0.5"}, 2, "no --subnet contains --aux-address r=10.9.0.5"},
		{"unknown option", []string{"lan", "--subnet", "10.0.0.0/24", "-o", "ipvlan_mode=l2"}, 2, "-o ipvlan_mode: unknown option (maclan takes parent, macvlan_mode and mtu)"},
		{"bad mode", []string{"lan", "--subnet", "10.0.0.0/24", "-o", "macvlan_mode=l3"}, 2, "-o macvlan_mode=l3: unknown mode (want bridge, private, vepa or passthru)"},
		{"etcd without endpoints", []string{"lan", "--subnet", "10.0.0.0/24", "--store", "etcd"}, 2, "--store etcd needs --etcd-endpoints URL[,URL...]"},
		{"bad parent, from the plugins' parser", []string{"lan", "--subnet", "10.0.0.0/24", "-o", "parent=a/b"}, 1, `the configuration would be refused by the plugins: field "master": interface name "a/b" contains '/', ':' or white space`},
		{"shim in passthru, from the plugins' parser", []string{"lan", "--subnet", "10.0.0.0/24", "-o", "macvlan_mode=passthru", "--host-shim"}, 1, `field "hostShim": passthru mode`},
		{"bad etcd endpoint, from the plugins' parser", []string{"lan", "--subnet", "10.0.0.0/24", "--etcd-endpoints", "10.0.0.5"}, 1, `ipam.store.endpoints[0] "10.0.0.5": want http://host:port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			code, _, errOut := runMain(t, append([]string{"create", "--conf-dir", dir}, tt.args...)...)
			if code != tt.wantCode || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("got exit %d, stderr %q; want %d and %q", code, errOut, tt.wantCode, tt.wantErr)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("wrote %v, want nothing", entries)
			}
		})
	}
}

// TestCreateClashes: a name in use (by any CNI network of the directory)
// and a subnet overlapping a maclan network's on the same parent are
// refused; the same subnet on another parent is not.
func TestCreateClashes(t *testing.T) {
	dir := t.TempDir()
	other := `{"cniVersion":"1.0.0","name":"podman","plugins":[{"type":"bridge","ipam":{"type":"host-local","subnet":"10.88.0.0/16"}}]}`
	if err := os.WriteFile(filepath.Join(dir, "87-podman.conflist"), []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	create := func(args ...string) (int, string) {
		code, _, errOut := runMain(t, append([]string{"create", "--conf-dir", dir}, args...)...)
		return code, errOut
	}
	if code, errOut := create("lan", "--subnet", "10.0.0.0/24", "-o", "parent=eth0"); code != 0 {
		t.Fatalf("first create: exit %d %q", code, errOut)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"lan", "--subnet", "10.9.0.0/24"}, "network with name lan already exists (" + filepath.Join(dir, "lan.conflist") + ")"},
		{[]string{"podman", "--subnet", "10.9.0.0/24"}, "network with name podman already exists (" + filepath.Join(dir, "87-podman.conflist") + ")"},
		{[]string{"lan2", "--subnet", "10.0.0.128/25", "-o", "parent=eth0"}, "--subnet 10.0.0.128/25 overlaps subnet 10.0.0.0/24 of network lan on the same parent eth0"},
	} {
		if code, errOut := create(tt.args...); code != 1 || !strings.Contains(errOut, tt.want) {
			t.Errorf("create %v: got exit %d %q, want 1 and %q", tt.args, code, errOut, tt.want)
		}
	}
	if code, errOut := create("lan2", "--subnet", "10.0.0.0/24", "-o", "parent=eth1"); code != 0 {
		t.Errorf("same subnet on another parent: exit %d %q, want success", code, errOut)
	}
}

// TestCreateMatchesExample: the walk-through's network is the shipped
// example's, as the plugins read them.
func TestCreateMatchesExample(t *testing.T) {
	dir := t.TempDir()
	code, _, errOut := runMain(t, "create", "--conf-dir", dir, "lan", "--subnet", "198.51.100.0/24", "--gateway", "198.51.100.1",
		"--ipv6", "--subnet", "2001:db8:100::/64", "-o", "parent=eth0")
	if code != 0 {
		t.Fatalf("exit %d %q", code, errOut)
	}
	b, err := os.ReadFile(filepath.Join(dir, "lan.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := parseNetwork(b, "lan.conflist")
	if n.conf.Mode != config.ModeBridge || n.ipam.Ranges[1][0].Gateway.String() != "2001:db8:100::1" || n.ipam.Store.Dir != ipamconf.DefaultDataDir {
		t.Errorf("got mode %s, IPv6 gateway %s, store %s", n.conf.Mode, n.ipam.Ranges[1][0].Gateway, n.ipam.Store.Dir)
	}
}
