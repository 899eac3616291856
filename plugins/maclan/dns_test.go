package main

import (
	"reflect"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestMergeDNS(t *testing.T) {
	tests := []struct {
		name           string
		conf, fromIPAM types.DNS
		want           types.DNS
	}{
		{name: "both empty"},
		{
			name:     "IPAM only",
			fromIPAM: types.DNS{Nameservers: []string{"192.0.2.53"}, Domain: "lan", Search: []string{"lan"}},
			want:     types.DNS{Nameservers: []string{"192.0.2.53"}, Domain: "lan", Search: []string{"lan"}},
		},
		{
			name:     "config first, no duplicates, config domain wins",
			conf:     types.DNS{Nameservers: []string{"198.51.100.53", "192.0.2.53"}, Domain: "corp", Options: []string{"ndots:2"}},
			fromIPAM: types.DNS{Nameservers: []string{"192.0.2.53", "2001:db8::53"}, Domain: "lan", Options: []string{"ndots:2", "rotate"}},
			want: types.DNS{
				Nameservers: []string{"198.51.100.53", "192.0.2.53", "2001:db8::53"},
				Domain:      "corp",
				Options:     []string{"ndots:2", "rotate"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mergeDNS(tt.conf, tt.fromIPAM); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("mergeDNS() = %+v, want %+v", got, tt.want)
			}
		})
	}
}
