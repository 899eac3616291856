package ipamconf

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// ipamNet wraps an ipam object in a net conf as the main plugin passes it,
// with fields of its own that maclan-ipam must ignore.
func ipamNet(version, ipam string, extra string) string {
	return `{"cniVersion":"` + version + `","name":"net1","type":"maclan","master":"eth0","mode":"bridge",` + extra + `"ipam":` + ipam + `}`
}

func TestParseIPAMConf(t *testing.T) {
	tests := []struct {
		name    string
		stdin   string
		args    string
		wantErr string // substring; "" = success
		check   func(t *testing.T, c *Conf)
	}{
		{
			name:  "host-local ranges with defaults",
			stdin: ipamNet("1.0.0", `{"type":"maclan-ipam","ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/64"}]]}`, ""),
			check: func(t *testing.T, c *Conf) {
				if len(c.Ranges) != 2 {
					t.Fatalf("got %d range sets, want 2", len(c.Ranges))
				}
				r := c.Ranges[0][0]
				if r.Gateway.String() != "10.1.0.1" || r.RangeStart.String() != "10.1.0.1" || r.RangeEnd.String() != "10.1.0.254" {
					t.Errorf("v4 defaults: got gw %s range %s, want 10.1.0.1 and 10.1.0.1-10.1.0.254", r.Gateway, r)
				}
				if r6 := c.Ranges[1][0]; r6.RangeEnd.String() != "fd00::ffff:ffff:ffff:ffff" {
					t.Errorf("v6 rangeEnd: got %s", r6.RangeEnd)
				}
				if c.Name != "net1" || c.Store.Type != "disk" || c.Store.Dir != DefaultDataDir {
					t.Errorf("got name %q store %+v", c.Name, c.Store)
				}
				if time.Duration(c.LockTimeout) != store.DefaultLockTimeout {
					t.Errorf("lockTimeout: got %v", time.Duration(c.LockTimeout))
				}
			},
		},
		{
			name:  "legacy single range comes first",
			stdin: ipamNet("0.3.1", `{"type":"maclan-ipam","subnet":"10.2.0.0/16","rangeStart":"10.2.1.0","rangeEnd":"10.2.1.99","gateway":"10.2.0.254","ranges":[[{"subnet":"10.3.0.0/24"}]]}`, ""),
			check: func(t *testing.T, c *Conf) {
				if len(c.Ranges) != 2 || c.Ranges[0][0].Subnet.String() != "10.2.0.0/16" || c.Ranges[0][0].Gateway.String() != "10.2.0.254" {
					t.Errorf("got %+v", c.Ranges)
				}
			},
		},
		{
			name:  "dataDir, routes, resolvConf, exclude, lockTimeout",
			stdin: ipamNet("1.1.0", `{"type":"maclan-ipam","dataDir":"/run/x","resolvConf":"/etc/resolv.conf","routes":[{"dst":"0.0.0.0/0"},{"dst":"192.168.0.0/16","gw":"10.1.0.254"}],"exclude":["10.1.0.7","10.1.0.32/28"],"lockTimeout":"3s","ranges":[[{"subnet":"10.1.0.0/24"}]]}`, ""),
			check: func(t *testing.T, c *Conf) {
				if c.Store.Dir != "/run/x" || len(c.Routes) != 2 || time.Duration(c.LockTimeout) != 3*time.Second {
					t.Errorf("got dir %q routes %d timeout %v", c.Store.Dir, len(c.Routes), time.Duration(c.LockTimeout))
				}
				ex := c.ExcludedPrefixes()
				if len(ex) != 2 || ex[0].String() != "10.1.0.7/32" || ex[1].String() != "10.1.0.32/28" {
					t.Errorf("exclude: got %v", ex)
				}
			},
		},
		{
			name:  "store object",
			stdin: ipamNet("1.0.0", `{"type":"maclan-ipam","store":{"type":"disk","dir":"/srv/ipam"},"lockTimeout":2,"ranges":[[{"subnet":"10.1.0.0/24"}]]}`, ""),
			check: func(t *testing.T, c *Conf) {
				if c.Store.Dir != "/srv/ipam" || time.Duration(c.LockTimeout) != 2*time.Second {
					t.Errorf("got %+v %v", c.Store, time.Duration(c.LockTimeout))
				}
			},
		},
		{
			name:  "static requests from all four sources",
			stdin: ipamNet("1.0.0", `{"type":"maclan-ipam","ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.2.0.0/24"}],[{"subnet":"10.3.0.0/24"}],[{"subnet":"fd00::/64"}]]}`, `"runtimeConfig":{"ips":["10.1.0.5/24"]},"args":{"cni":{"ips":["10.2.0.5"]},"org.apache.mesos":{"network_info":{"name":"n","ip_addresses":[{"ip_address":"10.3.0.5","protocol":"IPv4"},{"protocol":"IPv6"}]}}},`),
			args:  "K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns;IP=fd00::5,10.1.0.5;MAC=02:00:00:00:00:01",
			check: func(t *testing.T, c *Conf) {
				var got []string
				for _, r := range c.Requested {
					got = append(got, r.IP.String()+"@"+r.Source)
				}
				want := "10.1.0.5@runtimeConfig.ips 10.2.0.5@args.cni.ips 10.3.0.5@args[\"org.apache.mesos\"].network_info.ip_addresses fd00::5@CNI_ARGS IP"
				if strings.Join(got, " ") != want {
					t.Errorf("got %v, want %s", got, want)
				}
			},
		},
		{
			name:  "runtime ipRanges capability",
			stdin: ipamNet("1.0.0", `{"type":"maclan-ipam","ranges":[[{"subnet":"10.1.0.0/24"}]]}`, `"runtimeConfig":{"ipRanges":[[{"subnet":"10.9.0.0/24"}]]},`),
			check: func(t *testing.T, c *Conf) {
				if len(c.Ranges) != 2 || c.Ranges[0][0].Subnet.String() != "10.9.0.0/24" {
					t.Errorf("got %+v", c.Ranges)
				}
			},
		},
		{
			name:  "GC valid-attachments and the older key",
			stdin: ipamNet("1.1.0", `{"type":"maclan-ipam","ranges":[[{"subnet":"10.1.0.0/24"}]]}`, `"cni.dev/attachments":[{"containerID":"old","ifname":"eth0"}],`),
			check: func(t *testing.T, c *Conf) {
				if len(c.Attachments) != 1 || c.Attachments[0].ContainerID != "old" {
					t.Errorf("got %+v", c.Attachments)
				}
			},
		},
		{
			name:  "GC empty list is not an absent list",
			stdin: ipamNet("1.1.0", `{"type":"maclan-ipam","ranges":[[{"subnet":"10.1.0.0/24"}]]}`, `"cni.dev/valid-attachments":[],`),
			check: func(t *testing.T, c *Conf) {
				if c.Attachments == nil {
					t.Errorf("got nil, want an empty list")
				}
			},
		},
		{
			name:  "no GC list",
			stdin: ipamNet("1.1.0", `{"type":"maclan-ipam","ranges":[[{"subnet":"10.1.0.0/24"}]]}`, ""),
			check: func(t *testing.T, c *Conf) {
				if c.Attachments != nil {
					t.Errorf("got %v, want nil", c.Attachments)
				}
			},
		},
		{name: "no ipam", stdin: `{"cniVersion":"1.0.0","name":"n"}`, wantErr: `no "ipam"`},
		{name: "no ranges", stdin: ipamNet("1.0.0", `{"type":"maclan-ipam"}`, ""), wantErr: "no range given"},
		{name: "bad subnet", stdin: ipamNet("1.0.0", `{"ranges":[[{"subnet":"10.1.0.0/33"}]]}`, ""), wantErr: "10.1.0.0/33"},
		{name: "host bits", stdin: ipamNet("1.0.0", `{"ranges":[[{"subnet":"10.1.0.5/24"}]]}`, ""), wantErr: "host bits"},
		{name: "too small", stdin: ipamNet("1.0.0", `{"ranges":[[{"subnet":"10.1.0.0/31"}]]}`, ""), wantErr: "too small"},
		{name: "gateway outside", stdin: ipamNet("1.0.0", `{"ranges":[[{"subnet":"10.1.0.0/24","gateway":"10.2.0.1"}]]}`, ""), wantErr: "gateway 10.2.0.1"},
		{name: "start after end", stdin: ipamNet("1.0.0", `{"ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.9","rangeEnd":"10.1.0.5"}]]}`, ""), wantErr: "rangeStart 10.1.0.9 is after"},
		{name: "mixed families in a set", stdin: ipamNet("1.0.0", `{"ranges":[[{"subnet":"10.1.0.0/24"},{"subnet":"fd00::/64"}]]}`, ""), wantErr: "same address family"},
		{name: "overlapping sets", stdin: ipamNet("1.0.0", `{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.1.0.0/16"}]]}`, ""), wantErr: "overlaps"},
		{name: "two v4 sets in 0.2.0", stdin: ipamNet("0.2.0", `{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.2.0.0/24"}]]}`, ""), wantErr: "one range set per address family"},
		{name: "legacy fields without subnet", stdin: ipamNet("1.0.0", `{"rangeStart":"10.1.0.5","ranges":[[{"subnet":"10.1.0.0/24"}]]}`, ""), wantErr: "without subnet"},
		{name: "bad exclude", stdin: ipamNet("1.0.0", `{"exclude":["10.1.0.x"],"ranges":[[{"subnet":"10.1.0.0/24"}]]}`, ""), wantErr: "10.1.0.x"},
		{name: "etcd without endpoints", stdin: ipamNet("1.0.0", `{"store":{"type":"etcd"},"ranges":[[{"subnet":"10.1.0.0/24"}]]}`, ""), wantErr: "ipam.store.endpoints"},
		{name: "unknown store", stdin: ipamNet("1.0.0", `{"store":{"type":"s3"},"ranges":[[{"subnet":"10.1.0.0/24"}]]}`, ""), wantErr: `store.type "s3"`},
		{name: "relative dir", stdin: ipamNet("1.0.0", `{"dataDir":"data","ranges":[[{"subnet":"10.1.0.0/24"}]]}`, ""), wantErr: `"data" is not an absolute path`},
		{name: "dirs disagree", stdin: ipamNet("1.0.0", `{"dataDir":"/a","store":{"dir":"/b"},"ranges":[[{"subnet":"10.1.0.0/24"}]]}`, ""), wantErr: "disagree"},
		{name: "bad lock timeout", stdin: ipamNet("1.0.0", `{"lockTimeout":"-1s","ranges":[[{"subnet":"10.1.0.0/24"}]]}`, ""), wantErr: "lockTimeout -1s"},
		{name: "unsafe network name", stdin: `{"cniVersion":"1.0.0","name":"../etc","ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}]]}}`, wantErr: "network name"},
		{name: "route without dst", stdin: ipamNet("1.0.0", `{"routes":[{"gw":"10.1.0.1"}],"ranges":[[{"subnet":"10.1.0.0/24"}]]}`, ""), wantErr: "routes[0]: missing dst"},
		{name: "request outside ranges", stdin: ipamNet("1.0.0", `{"ranges":[[{"subnet":"10.1.0.0/24"}]]}`, ""), args: "IP=10.9.0.5", wantErr: "CNI_ARGS IP: requested address 10.9.0.5 is in no range"},
		{name: "request of the gateway", stdin: ipamNet("1.0.0", `{"ranges":[[{"subnet":"10.1.0.0/24"}]]}`, `"runtimeConfig":{"ips":["10.1.0.1/24"]},`), wantErr: "runtimeConfig.ips: requested address 10.1.0.1 is the network, broadcast or gateway"},
		{name: "request of the broadcast", stdin: ipamNet("1.0.0", `{"ranges":[[{"subnet":"10.1.0.0/24","rangeEnd":"10.1.0.255"}]]}`, `"args":{"cni":{"ips":["10.1.0.255"]}},`), wantErr: "10.1.0.255 is the network, broadcast"},
		{name: "request excluded", stdin: ipamNet("1.0.0", `{"exclude":["10.1.0.0/28"],"ranges":[[{"subnet":"10.1.0.0/24"}]]}`, ""), args: "IP=10.1.0.9", wantErr: "10.1.0.9 is excluded"},
		{name: "two requests in one set", stdin: ipamNet("1.0.0", `{"ranges":[[{"subnet":"10.1.0.0/24"}]]}`, ""), args: "IP=10.1.0.9,10.1.0.10", wantErr: "one address per range set"},
		{name: "bad request", stdin: ipamNet("1.0.0", `{"ranges":[[{"subnet":"10.1.0.0/24"}]]}`, ""), args: "IP=10.1.0.300", wantErr: `"10.1.0.300" is neither`},
		{name: "malformed CNI_ARGS", stdin: ipamNet("1.0.0", `{"ranges":[[{"subnet":"10.1.0.0/24"}]]}`, ""), args: "IP", wantErr: "not KEY=VALUE"},
		{name: "not JSON", stdin: `{"name":`, wantErr: "decode net conf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.stdin), tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				if !errors.Is(err, config.ErrInvalid) && !errors.Is(err, config.ErrInvalidArgs) {
					t.Errorf("got %v, want it to wrap ErrInvalid or ErrInvalidArgs", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want success", err)
			}
			tt.check(t, c)
		})
	}
}

// DEL must work on a net conf whose ranges have become invalid.
func TestDecodeIPAMConfIgnoresRanges(t *testing.T) {
	c, err := Decode([]byte(ipamNet("1.0.0", `{"dataDir":"/x","ranges":[[{"subnet":"10.1.0.5/24"}]]}`, "")))
	if err != nil {
		t.Fatalf("got %v, want success", err)
	}
	if c.Name != "net1" || c.Store.Dir != "/x" {
		t.Errorf("got %q %q", c.Name, c.Store.Dir)
	}
}

func FuzzParseIPAMConf(f *testing.F) {
	f.Add([]byte(ipamNet("1.0.0", `{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/120","rangeStart":"fd00::10"}]],"exclude":["10.1.0.5"]}`, `"runtimeConfig":{"ips":["10.1.0.9/24"]},`)), "IP=fd00::20")
	f.Add([]byte(ipamNet("0.2.0", `{"subnet":"10.1.0.0/16","gateway":"10.1.0.1"}`, "")), "")
	f.Fuzz(func(t *testing.T, stdin []byte, args string) {
		c, err := Parse(stdin, args)
		if err != nil {
			if !errors.Is(err, config.ErrInvalid) && !errors.Is(err, config.ErrInvalidArgs) {
				t.Fatalf("error %v wraps neither ErrInvalid nor ErrInvalidArgs", err)
			}
			return
		}
		// Whatever parses must be safe to act on.
		if c.Name == "" || strings.ContainsAny(c.Name, "/\x00") || c.Name == ".." {
			t.Fatalf("unsafe network name %q accepted", c.Name)
		}
		for i, set := range c.Ranges {
			for _, r := range set {
				if !r.Subnet.Contains(r.RangeStart) || !r.Subnet.Contains(r.RangeEnd) || r.RangeStart.Compare(r.RangeEnd) > 0 || !r.Subnet.Contains(r.Gateway) {
					t.Fatalf("range set %d: inconsistent range %+v", i, r)
				}
			}
		}
		for _, r := range c.Requested {
			found := false
			for _, set := range c.Ranges {
				if k := set.RangeFor(r.IP); k >= 0 && !set[k].Reserved(r.IP) {
					found = true
				}
			}
			if !found || r.IP != netip.MustParseAddr(r.IP.String()) {
				t.Fatalf("requested %s accepted outside every range", r.IP)
			}
		}
	})
}
