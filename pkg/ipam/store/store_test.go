package store

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"0", true},
		{"abc-DEF_1.2", true},
		{"k8s_POD_default-web-0_1b2c", true},
		{strings.Repeat("a", MaxIDLen), true},
		{"", false},
		{strings.Repeat("a", MaxIDLen+1), false},
		{"-a", false},
		{"_a", false},
		{".a", false},
		{"..", false},
		{"a/b", false},
		{"../etc", false},
		{"a b", false},
		{"a\x00", false},
		{"caf\xc3\xa9", false},
		{"\xff", false},
	} {
		err := ValidateName("container ID", tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "container ID") {
			t.Errorf("ValidateName(%q) error %q does not name its subject", tc.name, err)
		}
	}
}

func TestParseCursor(t *testing.T) {
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	for _, tc := range []struct {
		in   string
		want netip.Addr
	}{
		{"10.0.0.7\n", netip.MustParseAddr("10.0.0.7")},
		{"2001:db8::1", netip.MustParseAddr("2001:db8::1")},
		{"", netip.Addr{}},
		{"not an address\n", netip.Addr{}},
	} {
		if got := ParseCursor(log, "set0", []byte(tc.in)); got != tc.want {
			t.Errorf("ParseCursor(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if !strings.Contains(logged.String(), "cursor unreadable") || !strings.Contains(logged.String(), "set=set0") {
		t.Errorf("an unreadable cursor was not logged with its set: %q", logged.String())
	}
}
