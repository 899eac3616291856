// Package masterlink finds the master of a macvlan network (named, or the
// interface of the default route) and tells whether it can carry traffic.
// Both the plugin, before it makes a link, and the IPAM, before it probes
// the LAN, look the master up; this package lets the IPAM do so without
// linking the link-making package. It imports nothing of maclan's.
package masterlink

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// ErrNotFound: the master interface does not exist.
var ErrNotFound = errors.New("master interface not found")

// DefaultRoute returns the link that carries the default route in the
// namespace of h: the IPv4 default route if there is one, else the IPv6 one.
func DefaultRoute(h netlinksafe.Handle) (netlink.Link, error) {
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.RouteListFiltered(family, &netlink.Route{Table: syscall.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if idx := defaultRouteIndex(r); idx != 0 {
				return h.LinkByIndex(idx)
			}
		}
	}
	return nil, errors.New("no default route to choose a master from")
}

// defaultRouteIndex is the index of the link r goes out of if r is a
// default route (the first hop's, for a multipath one), else 0.
func defaultRouteIndex(r netlink.Route) int {
	if r.Dst != nil && !isZeroPrefix(r.Dst) {
		return 0
	}
	if r.LinkIndex == 0 && len(r.MultiPath) > 0 {
		return r.MultiPath[0].LinkIndex
	}
	return r.LinkIndex
}

func isZeroPrefix(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0 && n.IP.IsUnspecified()
}

// Lookup finds the master by name, or the default-route link when name is
// empty. where names the namespace for messages ("host", "container").
func Lookup(h netlinksafe.Handle, name, where string) (netlink.Link, error) {
	if name == "" {
		l, err := DefaultRoute(h)
		if err != nil {
			return nil, fmt.Errorf("field \"master\" is empty and the %s namespace has %w", where, err)
		}
		return l, nil
	}
	l, err := h.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil, fmt.Errorf("master %q in the %s network namespace: %w", name, where, ErrNotFound)
		}
		return nil, fmt.Errorf("look up master %q: %w", name, err)
	}
	return l, nil
}

// Ready reports a master that cannot carry traffic: down, or up without a
// carrier (operstate down or lower-layer down). A master whose driver does
// not report an operstate ("unknown") counts as ready.
func Ready(master netlink.Link) error {
	a := master.Attrs()
	switch {
	case a.Flags&net.FlagUp == 0:
		return fmt.Errorf("master %q is down", a.Name)
	case a.OperState == netlink.OperDown || a.OperState == netlink.OperLowerLayerDown:
		return fmt.Errorf("master %q has no carrier (operstate %s)", a.Name, a.OperState)
	}
	return nil
}
