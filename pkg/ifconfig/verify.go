package ifconfig

import (
	"fmt"
	"net"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/maclan-cni/maclan/pkg/nldump"
)

// Verify checks, through h (bound to the container's namespace), that the
// link ifName holds every address of ips with the route to its subnet, and
// that every route of routes is in the main table: what CHECK asks of a
// previous result. It does the work of the reference plugins'
// ip.ValidateExpectedInterfaceIPs and ip.ValidateExpectedRoute without
// linking their package, whose firewall dependencies cost every maclan
// process start-up time.
func Verify(h netlinksafe.Handle, ifName string, ips []*current.IPConfig, routes []*types.Route) error {
	link, err := h.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("container interface %q: %w", ifName, err)
	}
	addrs, err := nldump.AddrList(h, link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %q: %w", ifName, err)
	}
	for _, ipc := range ips {
		want := netlink.Addr{IPNet: &net.IPNet{IP: ipc.Address.IP, Mask: ipc.Address.Mask}}
		found := false
		for _, a := range addrs {
			if a.Equal(want) {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("container interface %q lacks address %s", ifName, want.IPNet)
		}
		subnet := &net.IPNet{IP: ipc.Address.IP.Mask(ipc.Address.Mask), Mask: ipc.Address.Mask}
		ok, err := hasRoute(h, subnet, nil)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("container interface %q: no route to the subnet %s of %s", ifName, subnet, ipc.Address.IP)
		}
	}
	for _, r := range routes {
		ok, err := hasRoute(h, &r.Dst, r.GW)
		if err != nil {
			return err
		}
		if !ok {
			via := "the default gateway"
			if r.GW != nil {
				via = r.GW.String()
			}
			return fmt.Errorf("route to %s via %s is missing in the container", r.Dst.String(), via)
		}
	}
	return nil
}

// hasRoute reports whether the main table holds a route to dst (via gw, if
// set).
func hasRoute(h netlinksafe.Handle, dst *net.IPNet, gw net.IP) (bool, error) {
	family := netlink.FAMILY_V6
	if dst.IP.To4() != nil {
		family = netlink.FAMILY_V4
	}
	filter := &netlink.Route{Dst: dst, Gw: gw, Table: syscall.RT_TABLE_MAIN}
	mask := netlink.RT_FILTER_DST | netlink.RT_FILTER_TABLE
	if ones, _ := dst.Mask.Size(); ones == 0 {
		filter.Dst = nil // the kernel reports a default route without a destination
	}
	if gw != nil {
		mask |= netlink.RT_FILTER_GW
	}
	found, err := h.RouteListFiltered(family, filter, mask)
	if err != nil {
		return false, fmt.Errorf("look up the route to %s: %w", dst, err)
	}
	return len(found) > 0, nil
}
