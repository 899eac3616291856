package config

import (
	"errors"
	"net"
	"strings"
	"testing"
)

// FuzzParseNetConf feeds the main plugin's configuration parser arbitrary
// stdin and CNI_ARGS. It must never panic, every failure must wrap
// ErrInvalid or ErrInvalidArgs (so that the plugin answers with code 7 or 4),
// and whatever it accepts must be safe to act on: a known mode, an MTU that
// is not negative, a master that is a legal interface name, a unicast MAC
// taken from the source of highest precedence, and a complete host shim.
// DecodeNetConf, which DEL, GC and STATUS use, must not panic either and
// fails only with ErrInvalid. Seeds: testdata/fuzz/FuzzParseNetConf.
func FuzzParseNetConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"lan","type":"maclan","master":"eth0","mode":"bridge","mtu":1500,"ipam":{"type":"maclan-ipam"}}`), "")
	f.Add([]byte(`{"name":"lan","mac":"02:00:00:00:00:01","runtimeConfig":{"mac":"02:00:00:00:00:03"}}`), "IgnoreUnknown=1;MAC=02:00:00:00:00:02")
	f.Add([]byte(`{"name":"lan","mode":"private","hostShim":{"enabled":true,"address":"198.51.100.250/24"}}`), "K8S_POD_NAME=web;IP=192.0.2.9")
	f.Fuzz(func(t *testing.T, stdin []byte, cniArgs string) {
		if _, err := DecodeNetConf(stdin); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("DecodeNetConf: error %v does not wrap ErrInvalid", err)
		}
		c, err := ParseNetConf(stdin, cniArgs)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrInvalidArgs) {
				t.Fatalf("error %v wraps neither ErrInvalid nor ErrInvalidArgs", err)
			}
			return
		}
		if c.Name == "" {
			t.Fatal("accepted an empty network name")
		}
		switch c.Mode {
		case ModeBridge, ModePrivate, ModeVEPA, ModePassthru:
		default:
			t.Fatalf("accepted mode %q", c.Mode)
		}
		if c.MTU < 0 {
			t.Fatalf("accepted mtu %d", c.MTU)
		}
		if c.Master != "" {
			if len(c.Master) > 15 || c.Master == "." || c.Master == ".." || strings.ContainsAny(c.Master, "/: \t\n\v\f\r") {
				t.Fatalf("accepted master %q, which is no interface name", c.Master)
			}
		}
		if c.MAC != "" {
			mac, err := net.ParseMAC(c.MAC)
			if err != nil || len(mac) != 6 || mac[0]&1 == 1 || mac.String() == "00:00:00:00:00:00" {
				t.Fatalf("accepted MAC %q, which an interface cannot carry", c.MAC)
			}
		}
		if rc := c.RuntimeConfig.MAC; rc != "" && c.MAC != rc {
			t.Fatalf("MAC %q, but runtimeConfig.mac %q takes precedence", c.MAC, rc)
		}
		if c.ShimEnabled() {
			if c.Mode == ModePassthru || c.Mode == ModePrivate || c.LinkInContainer {
				t.Fatalf("accepted a host shim with mode %q, linkInContainer %v", c.Mode, c.LinkInContainer)
			}
			if c.ShimFromIPAM() {
				if typ := c.IPAM.Type; typ == "" || typ == "static" || typ == "dhcp" {
					t.Fatalf("accepted a host shim without an address whose IPAM %q cannot lease one", typ)
				}
			} else if _, err := c.ShimAddress(); err != nil {
				t.Fatalf("accepted a host shim whose address does not parse: %v", err)
			}
		}
	})
}
