package ipamplugin

import (
	"fmt"
	"testing"

	"github.com/maclan-cni/maclan/pkg/ipam/ipamconf"
)

// Leases are written without fsync only when none is needed after the
// boot: a sticky hold is made at the next boot from the leases of the
// last, so stickyFor needs them on disk.
func TestVolatileLeasesOnlyWhenNothingOutlivesTheBoot(t *testing.T) {
	for ipam, want := range map[string]bool{
		``:                            true,
		`,"reclaimAfterReboot":true`:  true,
		`,"reclaimAfterReboot":false`: false,
		`,"stickyFor":"1h"`:           false,
		`,"stickyFor":"1h","reclaimAfterReboot":true`: false,
	} {
		conf, err := ipamconf.Parse([]byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"n","type":"maclan","master":"eth0",
			"ipam":{"type":"maclan-ipam","ranges":[[{"subnet":"10.0.0.0/24"}]]%s}}`, ipam)), "")
		if err != nil {
			t.Fatal(err)
		}
		if got := volatileLeases(conf); got != want {
			t.Errorf("ipam {...%s}: leases written without fsync %v, want %v", ipam, got, want)
		}
	}
}
