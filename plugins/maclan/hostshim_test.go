package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/maclan-cni/maclan/pkg/config"
)

func TestShimAttachment(t *testing.T) {
	for _, tc := range []struct{ master, id, ifName string }{
		{"eth0", "maclan-hostshim-eth0", "shim-eth0"},
		{"enp0s31f6.100", "maclan-hostshim-enp0s31f6.100", "shim-enp0s31f6."},
		{"br@lan", "maclan-hostshim-x6272406c616e", "shim-br@lan"},
	} {
		id, ifName := shimAttachment(tc.master, "")
		if id != tc.id || ifName != tc.ifName {
			t.Errorf("shimAttachment(%q) = %q, %q; want %q, %q", tc.master, id, ifName, tc.id, tc.ifName)
		}
	}
}

// On an etcd network each host's shim has an attachment of its own.
func TestShimAttachmentPerHostOnEtcd(t *testing.T) {
	etcdConf := []byte(`{"name":"lan","ipam":{"type":"maclan-ipam","store":{"type":"etcd","endpoints":["https://e:2379"]}}}`)
	diskConf := []byte(`{"name":"lan","ipam":{"type":"maclan-ipam"}}`)
	t.Setenv("MACLAN_TEST_HOST_ID", "host-a")
	a := shimHostTag(etcdConf)
	t.Setenv("MACLAN_TEST_HOST_ID", "host-b")
	b := shimHostTag(etcdConf)
	if a == "" || a == b {
		t.Errorf("host tags on etcd: %q and %q, want two different ones", a, b)
	}
	if tag := shimHostTag(diskConf); tag != "" {
		t.Errorf("host tag on a directory store: %q, want none (its attachment stays as it was)", tag)
	}
	if id, _ := shimAttachment("eth0", a); id != "maclan-hostshim-eth0-h"+a {
		t.Errorf("shim attachment on etcd: %q", id)
	}
}

func TestShimIPAMConfDropsTheContainersFields(t *testing.T) {
	in := `{"cniVersion":"1.0.0","name":"lan","type":"maclan","hostShim":{"enabled":true},
		"runtimeConfig":{"ips":["192.0.2.9/24"],"mac":"02:00:00:00:00:01"},"args":{"cni":{"ips":["192.0.2.10"]}},
		"prevResult":{"ips":[]},"ipam":{"type":"maclan-ipam","ranges":[[{"subnet":"192.0.2.0/24"}]]}}`
	out, err := shimIPAMConf([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"runtimeConfig", "args", "prevResult"} {
		if _, ok := m[k]; ok {
			t.Errorf("the shim's IPAM configuration keeps %q: %s", k, out)
		}
	}
	for _, k := range []string{"cniVersion", "name", "ipam"} {
		if _, ok := m[k]; !ok {
			t.Errorf("the shim's IPAM configuration lost %q: %s", k, out)
		}
	}
}

func TestWithShimAttachments(t *testing.T) {
	const list = `"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]`
	conf := func(shim, extra string) (*config.NetConf, []byte) {
		stdin := []byte(`{"cniVersion":"1.1.0","name":"lan","type":"maclan","master":"eth0",` + shim + extra + `"ipam":{"type":"maclan-ipam"}}`)
		c, err := config.DecodeNetConf(stdin)
		if err != nil {
			t.Fatal(err)
		}
		return c, stdin
	}

	c, stdin := conf(`"hostShim":{"enabled":true},`, list+",")
	out, err := withShimAttachments(stdin, c)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Valid []struct {
			ContainerID string `json:"containerID"`
			IfName      string `json:"ifname"`
		} `json:"cni.dev/valid-attachments"`
		IPAM map[string]any `json:"ipam"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, a := range got.Valid {
		ids = append(ids, a.ContainerID+"/"+a.IfName)
	}
	joined := strings.Join(ids, " ")
	if !strings.Contains(joined, "c1/eth0") || !strings.Contains(joined, "maclan-hostshim-eth0/shim-eth0") {
		t.Errorf("valid attachments %v: want the runtime's c1/eth0 and the shim's maclan-hostshim-eth0/shim-eth0", ids)
	}
	if got.IPAM["type"] != "maclan-ipam" {
		t.Errorf("the rest of the configuration changed: %s", out)
	}

	// No list: the IPAM releases nothing, and the configuration is passed on as it is.
	c, stdin = conf(`"hostShim":{"enabled":true},`, "")
	if out, err := withShimAttachments(stdin, c); err != nil || string(out) != string(stdin) {
		t.Errorf("without a list: %s, %v; want the configuration unchanged", out, err)
	}
	// A shim with a configured address holds no lease.
	c, stdin = conf(`"hostShim":{"enabled":true,"address":"192.0.2.250"},`, list+",")
	if out, err := withShimAttachments(stdin, c); err != nil || string(out) != string(stdin) {
		t.Errorf("configured shim address: %s, %v; want the configuration unchanged", out, err)
	}
}
