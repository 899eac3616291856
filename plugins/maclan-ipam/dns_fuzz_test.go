package ipamplugin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzReadResolvConf feeds the resolv.conf(5) reader arbitrary files of at
// most 64 KiB. It must not panic, and what it returns must be words of the
// file: no empty nameserver, no blanks, no comment text.
func FuzzReadResolvConf(f *testing.F) {
	f.Add([]byte("nameserver 192.0.2.53\nnameserver 2001:db8::53 # second\nsearch a.example b.example\ndomain example\noptions ndots:2 edns0\n"))
	f.Add([]byte("; comment\n#nameserver 10.0.0.1\nnameserver\ndomain a ; b\n\tsearch   x\r\n"))
	f.Add([]byte(strings.Repeat("x", 70000)))
	path := filepath.Join(f.TempDir(), "resolv.conf")
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<16 {
			return
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		dns, err := readResolvConf(path)
		if err != nil {
			return // a line longer than the scanner's buffer
		}
		words := append(append(append([]string{dns.Domain}, dns.Nameservers...), dns.Search...), dns.Options...)
		for i, w := range words {
			if (w == "" && i > 0) || strings.ContainsAny(w, "#; \t\n\r\v\f") {
				t.Fatalf("word %q of %q", w, data)
			}
		}
	})
}
