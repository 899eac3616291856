package ipamconf

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/config"
)

// TestConflictLifetime: ipam.conflictLifetime defaults to ten minutes, takes
// a duration string or seconds, and is read by DEL and GC too (GC releases
// expired records).
func TestConflictLifetime(t *testing.T) {
	const ranges = `"ranges":[[{"subnet":"10.1.0.0/24"}]]`
	tests := []struct {
		name    string
		field   string
		want    time.Duration
		wantErr string
	}{
		{name: "default", field: "", want: 10 * time.Minute},
		{name: "duration string", field: `"conflictLifetime":"90s",`, want: 90 * time.Second},
		{name: "seconds", field: `"conflictLifetime":2,`, want: 2 * time.Second},
		{name: "the shortest", field: `"conflictLifetime":"1s",`, want: time.Second},
		{name: "thirty days", field: `"conflictLifetime":"720h",`, want: 720 * time.Hour},
		{name: "negative", field: `"conflictLifetime":"-1m",`, wantErr: "ipam.conflictLifetime -1m0s is outside"},
		{name: "too short", field: `"conflictLifetime":"10ms",`, wantErr: "ipam.conflictLifetime 10ms is outside"},
		{name: "too long", field: `"conflictLifetime":"721h",`, wantErr: "ipam.conflictLifetime 721h0m0s is outside"},
		{name: "not a duration", field: `"conflictLifetime":"soon",`, wantErr: "soon"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdin := []byte(ipamNet("1.0.0", `{"type":"maclan-ipam",`+tt.field+ranges+`}`, `"conflictDetection":true,`))
			for _, parse := range []struct {
				name string
				fn   func() (*Conf, error)
			}{
				{"Parse", func() (*Conf, error) { return Parse(stdin, "") }},
				{"Decode", func() (*Conf, error) { return Decode(stdin) }},
			} {
				c, err := parse.fn()
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, config.ErrInvalid) {
						t.Errorf("%s: got %v, want an ErrInvalid containing %q", parse.name, err, tt.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", parse.name, err)
				}
				if got := time.Duration(c.ConflictLifetime); got != tt.want || !c.ConflictDetection {
					t.Errorf("%s: conflictLifetime %s (detection %v), want %s (detection on)", parse.name, got, c.ConflictDetection, tt.want)
				}
			}
		})
	}
}
