package netcmd

import (
	"os"
	"testing"
)

// FuzzParseNetwork: any file of the configuration directory (other
// runtimes' and users' files share it) is decoded without a panic, and a
// maclan network either parses or carries the plugins' error.
func FuzzParseNetwork(f *testing.F) {
	for _, p := range []string{"../../conflist-examples/10-maclan.conflist", "../../conflist-examples/mesos-maclan.conf", "../../conflist-examples/dhcp-maclan.conflist"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"name":"x","plugins":[{"type":"maclan"},{"type":"maclan"}]}`))
	f.Add([]byte(`{"name":"x","type":"maclan","ipam":{"type":"maclan-ipam"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<16 {
			return
		}
		n, err := parseNetwork(data, "f")
		if err == nil && n.maclan && n.err == nil && n.conf == nil {
			t.Errorf("a maclan network without configuration or error: %+v", n)
		}
		_ = n.subnets()
		_ = n.parent()
	})
}
