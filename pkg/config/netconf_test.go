package config

import (
	"errors"
	"strings"
	"testing"
)

func TestParseNetConf(t *testing.T) {
	tests := []struct {
		name     string
		stdin    string
		cniArgs  string
		wantMode string
		wantMAC  string
		wantErr  string // substring; "" means success
		wantIs   error
	}{
		{name: "defaults", stdin: `{"cniVersion":"1.0.0","name":"lan","type":"maclan"}`, wantMode: "bridge"},
		{name: "reference fields", stdin: `{"cniVersion":"0.4.0","name":"lan","type":"maclan","master":"eth1","mode":"vepa","mtu":1400,"linkInContainer":true,"bcqueuelen":100}`, wantMode: "vepa"},
		{name: "config mac", stdin: `{"name":"lan","mac":"02:00:00:00:00:01"}`, wantMode: "bridge", wantMAC: "02:00:00:00:00:01"},
		{name: "CNI_ARGS MAC beats config", stdin: `{"name":"lan","mac":"02:00:00:00:00:01"}`, cniArgs: "IgnoreUnknown=1;MAC=02:00:00:00:00:02", wantMode: "bridge", wantMAC: "02:00:00:00:00:02"},
		{name: "runtimeConfig beats CNI_ARGS", stdin: `{"name":"lan","mac":"02:00:00:00:00:01","runtimeConfig":{"mac":"02:00:00:00:00:03"}}`, cniArgs: "MAC=02:00:00:00:00:02", wantMode: "bridge", wantMAC: "02:00:00:00:00:03"},
		{name: "IPAM and runtime keys accepted", stdin: `{"name":"lan"}`, cniArgs: "IP=192.0.2.9;K8S_POD_NAME=web;K8S_POD_NAMESPACE=default", wantMode: "bridge"},
		{name: "malformed CNI_ARGS", stdin: `{"name":"lan"}`, cniArgs: "IP", wantErr: `CNI_ARGS pair "IP"`, wantIs: ErrInvalidArgs},
		{name: "malformed JSON", stdin: `{"name":`, wantErr: "decode network configuration", wantIs: ErrInvalid},
		{name: "no name", stdin: `{"type":"maclan"}`, wantErr: `"name"`, wantIs: ErrInvalid},
		{name: "unknown mode", stdin: `{"name":"lan","mode":"bridged"}`, wantErr: `unknown macvlan mode "bridged"`, wantIs: ErrInvalid},
		{name: "negative mtu", stdin: `{"name":"lan","mtu":-1}`, wantErr: `"mtu"`, wantIs: ErrInvalid},
		{name: "master too long", stdin: `{"name":"lan","master":"averyveryverylongname"}`, wantErr: "longer than 15", wantIs: ErrInvalid},
		{name: "master with slash", stdin: `{"name":"lan","master":"../eth0"}`, wantErr: "'/'", wantIs: ErrInvalid},
		{name: "bad mac names its source", stdin: `{"name":"lan"}`, cniArgs: "MAC=zz", wantErr: `CNI_ARGS MAC: invalid MAC address "zz"`, wantIs: ErrInvalid},
		{name: "multicast mac", stdin: `{"name":"lan","runtimeConfig":{"mac":"01:00:5e:00:00:01"}}`, wantErr: "runtimeConfig.mac: MAC address \"01:00:5e:00:00:01\" is a multicast", wantIs: ErrInvalid},
		{name: "zero mac", stdin: `{"name":"lan","mac":"00:00:00:00:00:00"}`, wantErr: "all zeroes", wantIs: ErrInvalid},
		{name: "host shim", stdin: `{"name":"lan","hostShim":{"enabled":true,"address":"198.51.100.250/24"}}`, wantMode: "bridge"},
		{name: "host shim off needs nothing", stdin: `{"name":"lan","mode":"passthru","hostShim":{"enabled":false}}`, wantMode: "passthru"},
		{name: "host shim refuses passthru", stdin: `{"name":"lan","mode":"passthru","hostShim":{"enabled":true,"address":"198.51.100.250"}}`, wantErr: "passthru mode", wantIs: ErrInvalid},
		{name: "host shim refuses private", stdin: `{"name":"lan","mode":"private","hostShim":{"enabled":true,"address":"198.51.100.250"}}`, wantErr: "private mode", wantIs: ErrInvalid},
		{name: "host shim without address or ipam", stdin: `{"name":"lan","hostShim":{"enabled":true}}`, wantErr: `"hostShim.address" is empty and there is no ipam`, wantIs: ErrInvalid},
		{name: "host shim address from the ipam", stdin: `{"name":"lan","hostShim":{"enabled":true},"ipam":{"type":"maclan-ipam"}}`, wantMode: "bridge"},
		{name: "host shim address not from static", stdin: `{"name":"lan","hostShim":{"enabled":true},"ipam":{"type":"static"}}`, wantErr: `the static IPAM cannot lease`, wantIs: ErrInvalid},
		{name: "host shim address not from dhcp", stdin: `{"name":"lan","hostShim":{"enabled":true},"ipam":{"type":"dhcp"}}`, wantErr: `the dhcp IPAM cannot lease`, wantIs: ErrInvalid},
		{name: "host shim bad address", stdin: `{"name":"lan","hostShim":{"enabled":true,"address":"lan-host"}}`, wantErr: `"lan-host" is not an IP`, wantIs: ErrInvalid},
		{name: "long mac", stdin: `{"name":"lan","mac":"02:00:00:00:00:00:00:01"}`, wantErr: "48-bit", wantIs: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, err := ParseNetConf([]byte(tt.stdin), tt.cniArgs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				if !errors.Is(err, tt.wantIs) {
					t.Fatalf("got error %v, want it to wrap %v", err, tt.wantIs)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if conf.Mode != tt.wantMode {
				t.Errorf("got mode %q, want %q", conf.Mode, tt.wantMode)
			}
			if conf.MAC != tt.wantMAC {
				t.Errorf("got MAC %q, want %q", conf.MAC, tt.wantMAC)
			}
		})
	}
}

func TestDecodeNetConfKeepsInvalidFields(t *testing.T) {
	// DEL must be able to read a configuration that ADD would refuse.
	conf, err := DecodeNetConf([]byte(`{"name":"lan","mode":"nonsense","master":"gone0","ipam":{"type":"maclan-ipam"}}`))
	if err != nil {
		t.Fatalf("got error %v, want none", err)
	}
	if conf.IPAM.Type != "maclan-ipam" {
		t.Errorf("got IPAM type %q, want maclan-ipam", conf.IPAM.Type)
	}
}

func TestParseCNIArgs(t *testing.T) {
	got, err := ParseCNIArgs("A=1;B=;C=x=y;")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"A": "1", "B": "", "C": "x=y"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("got %s=%q, want %q", k, got[k], v)
		}
	}
	for _, bad := range []string{"=1", "A", "A=1;;B"} {
		if _, err := ParseCNIArgs(bad); err == nil {
			t.Errorf("ParseCNIArgs(%q): got no error, want one", bad)
		}
	}
}
