package ipamconf

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// benchAddr is 10.0.0.0 plus n.
func benchAddr(n int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)})
}

// bigRangesConf is a net conf whose ipam has n four-address ranges, all in
// one set (perSet) or each in a set of its own, listed from the highest
// address down, and requests the given addresses through runtimeConfig.ips.
func bigRangesConf(n int, perSet bool, ips []string) []byte {
	var ranges []string
	for i := range n {
		k := n - 1 - i
		r := fmt.Sprintf(`{"subnet":"10.0.0.0/8","rangeStart":"%s","rangeEnd":"%s"}`, benchAddr(4*k+1), benchAddr(4*k+4))
		ranges = append(ranges, r)
	}
	var sets string
	if perSet {
		sets = "[[" + strings.Join(ranges, "],[") + "]]"
	} else {
		sets = "[[" + strings.Join(ranges, ",") + "]]"
	}
	extra := ""
	if len(ips) > 0 {
		js, _ := json.Marshal(ips)
		extra = `"runtimeConfig":{"ips":` + string(js) + `},`
	}
	return []byte(ipamNet("1.0.0", `{"type":"maclan-ipam","ranges":`+sets+`}`, extra))
}

// BenchmarkParseIPAMConfRanges times the validation of many ranges in one
// set and of many one-range sets (security review issue 11, finding 6).
func BenchmarkParseIPAMConfRanges(b *testing.B) {
	for _, perSet := range []bool{false, true} {
		for _, n := range []int{16000, 32000} {
			name := fmt.Sprintf("oneSet/ranges=%d", n)
			if perSet {
				name = fmt.Sprintf("setEach/ranges=%d", n)
			}
			b.Run(name, func(b *testing.B) {
				stdin := bigRangesConf(n, perSet, nil)
				for b.Loop() {
					if _, err := Parse(stdin, ""); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkParseIPAMConfRequested times the duplicate check of 30k
// requested addresses: all in one set (refused: one address per set) and
// one in each of 30k sets (accepted).
func BenchmarkParseIPAMConfRequested(b *testing.B) {
	const n = 30000
	ips := make([]string, n)
	for i := range ips {
		ips[i] = benchAddr(4*i + 2).String()
	}
	b.Run(fmt.Sprintf("oneSet/requested=%d", n), func(b *testing.B) {
		stdin := []byte(ipamNet("1.0.0", `{"type":"maclan-ipam","ranges":[[{"subnet":"10.0.0.0/8"}]]}`,
			`"runtimeConfig":{"ips":["`+strings.Join(ips, `","`)+`"]},`))
		for b.Loop() {
			if _, err := Parse(stdin, ""); err == nil || !strings.Contains(err.Error(), "one address per range set") {
				b.Fatalf("got %v, want one address per range set", err)
			}
		}
	})
	b.Run(fmt.Sprintf("setEach/requested=%d", n), func(b *testing.B) {
		stdin := bigRangesConf(n, true, ips)
		for b.Loop() {
			if _, err := Parse(stdin, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
}
