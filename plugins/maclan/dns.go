package main

import "github.com/containernetworking/cni/pkg/types"

// mergeDNS combines the "dns" of the configuration with the DNS that the
// IPAM returned. The configuration is the operator's explicit word, so its
// entries come first and its domain wins; the IPAM's entries follow without
// duplicates. (The reference macvlan plugin drops the IPAM's DNS.)
func mergeDNS(conf, fromIPAM types.DNS) types.DNS {
	out := types.DNS{
		Nameservers: union(conf.Nameservers, fromIPAM.Nameservers),
		Domain:      conf.Domain,
		Search:      union(conf.Search, fromIPAM.Search),
		Options:     union(conf.Options, fromIPAM.Options),
	}
	if out.Domain == "" {
		out.Domain = fromIPAM.Domain
	}
	return out
}

func union(a, b []string) []string {
	if len(a)+len(b) == 0 {
		return nil
	}
	seen := make(map[string]bool, len(a)+len(b))
	out := make([]string, 0, len(a)+len(b))
	for _, s := range append(append([]string{}, a...), b...) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
