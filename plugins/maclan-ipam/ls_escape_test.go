package ipamplugin

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/disk"
)

// TestLsTableEscapesStoreStrings: a store writer must not reach the
// operator's terminal through `ls`: a conflict note holding escape
// sequences, a newline and a tab is printed escaped, on its own row.
func TestLsTableEscapesStoreStrings(t *testing.T) {
	dir := t.TempDir()
	st, err := disk.New(dir, "net1", disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const hostile = "\x1b]0;owned\a\x1b[2J\nFAKE\trow\x7f\u202e\u009b"
	lease := store.Lease{IP: netip.MustParseAddr("10.1.0.5"), ContainerID: "c1", IfName: "eth0", Created: time.Now(), Conflict: hostile}
	ctx := context.Background()
	err = store.WithLock(ctx, st, func() error { return st.Reserve(ctx, lease) })
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := runCLI([]string{"ls", "--data-dir", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("ls: exit %d, stderr %q", code, stderr.String())
	}
	out := stdout.String()
	if lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n"); len(lines) != 2 {
		t.Errorf("ls printed %d lines, want a header and one row:\n%s", len(lines), out)
	}
	for _, r := range out {
		if r != '\n' && (r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u202e') {
			t.Fatalf("ls printed %U raw: %q", r, out)
		}
	}
	if want := cell(hostile); !strings.Contains(out, want) {
		t.Errorf("ls printed %q, want it to hold the note as %s", out, want)
	}
}

func TestCell(t *testing.T) {
	for in, want := range map[string]string{
		"c1":              "c1",
		"a b":             "a b",
		"":                "",
		"\x1b[31mred":     `"\x1b[31mred"`,
		"tab\there":       `"tab\there"`,
		"quote\"":         `"quote\""`,
		`back\slash`:      `"back\\slash"`,
		"bad\xffutf8":     `"bad\xffutf8"`,
		"caf\u00e9":       "caf\u00e9",
		"bidi\u202eevil":  `"bidi\u202eevil"`,
		"nbsp\u00a0space": `"nbsp\u00a0space"`,
	} {
		if got := cell(in); got != want {
			t.Errorf("cell(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"lease 10.0.0.2: fine":       "lease 10.0.0.2: fine",
		"a \"quoted\" name":          "a \"quoted\" name",
		"\x1b]0;owned\a\nFAKE\tline": `\x1b]0;owned\a\nFAKE\tline`,
		"bad \xff byte":              `bad \xff byte`,
		"bidi \u202e override":       `bidi \u202e override`,
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}
