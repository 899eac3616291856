package ipamplugin

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// readResolvConf turns a resolv.conf(5) file into the DNS of a result:
// nameserver lines become Nameservers, the last domain line Domain, search
// lines Search and options lines Options.
func readResolvConf(path string) (*types.DNS, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close() //nolint:errcheck // read-only file
	dns := &types.DNS{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line, _, _ = strings.Cut(line, ";")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		key, words := fields[0], fields[1:]
		switch key {
		case "nameserver":
			dns.Nameservers = append(dns.Nameservers, words[0])
		case "domain":
			dns.Domain = words[0]
		case "search":
			dns.Search = append(dns.Search, words...)
		case "options":
			dns.Options = append(dns.Options, words...)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return dns, nil
}
