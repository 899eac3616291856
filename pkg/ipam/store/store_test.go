package store

import (
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
