// Package macvlan creates, inspects and removes macvlan links through netlink
// handles bound to network namespaces. It knows nothing of CNI JSON.
package macvlan

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/maclan-cni/maclan/pkg/config"
)

// ErrMasterNotFound: the master interface does not exist.
var ErrMasterNotFound = errors.New("master interface not found")

var modes = map[string]netlink.MacvlanMode{
	config.ModeBridge:   netlink.MACVLAN_MODE_BRIDGE,
	config.ModePrivate:  netlink.MACVLAN_MODE_PRIVATE,
	config.ModeVEPA:     netlink.MACVLAN_MODE_VEPA,
	config.ModePassthru: netlink.MACVLAN_MODE_PASSTHRU,
}

// ParseMode maps a configuration mode name ("" is bridge) to the kernel's.
func ParseMode(s string) (netlink.MacvlanMode, error) {
	if s == "" {
		return netlink.MACVLAN_MODE_BRIDGE, nil
	}
	m, ok := modes[s]
	if !ok {
		return 0, fmt.Errorf("unknown macvlan mode %q: %w", s, config.ErrInvalid)
	}
	return m, nil
}

// ModeName is the inverse of ParseMode.
func ModeName(m netlink.MacvlanMode) string {
	for name, mode := range modes {
		if mode == m {
			return name
		}
	}
	return fmt.Sprintf("mode(%d)", m)
}

// DefaultRouteLink returns the link that carries the default route in the
// namespace of h: the IPv4 default route if there is one, else the IPv6 one.
func DefaultRouteLink(h netlinksafe.Handle) (netlink.Link, error) {
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.RouteListFiltered(family, &netlink.Route{Table: syscall.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil && !isZeroPrefix(r.Dst) {
				continue
			}
			idx := r.LinkIndex
			if idx == 0 && len(r.MultiPath) > 0 {
				idx = r.MultiPath[0].LinkIndex
			}
			if idx == 0 {
				continue
			}
			return h.LinkByIndex(idx)
		}
	}
	return nil, errors.New("no default route to choose a master from")
}

func isZeroPrefix(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0 && n.IP.IsUnspecified()
}

// LookupMaster finds the master by name, or the default-route link when name
// is empty. where names the namespace for messages ("host", "container").
func LookupMaster(h netlinksafe.Handle, name, where string) (netlink.Link, error) {
	if name == "" {
		l, err := DefaultRouteLink(h)
		if err != nil {
			return nil, fmt.Errorf("field \"master\" is empty and the %s namespace has %w", where, err)
		}
		return l, nil
	}
	l, err := h.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil, fmt.Errorf("master %q in the %s network namespace: %w", name, where, ErrMasterNotFound)
		}
		return nil, fmt.Errorf("look up master %q: %w", name, err)
	}
	return l, nil
}

// ErrNameTaken: the container gained an interface of the requested name
// while the link was being made (a concurrent ADD of the same attachment).
var ErrNameTaken = errors.New("interface name taken")

// Spec describes the macvlan link to create.
type Spec struct {
	Master     netlink.Link
	Mode       netlink.MacvlanMode
	MTU        int // 0: inherit the master's
	MAC        net.HardwareAddr
	BCQueueLen uint32
	IfName     string // name inside the container
}

// Create makes the macvlan link through masterH (bound to the master's
// namespace) directly inside the container namespace contNS, under a random
// temporary name so that it cannot collide with a host interface, and then
// renames it to spec.IfName through contH (bound to the container
// namespace). When the master is itself in the container, masterH and contH
// are bound to the same namespace and contNS is ignored. The returned link is
// the one seen in the container, still down. On error nothing is left.
func Create(masterH, contH netlinksafe.Handle, contNS netns.NsHandle, sameNS bool, spec Spec) (netlink.Link, error) {
	masterName := spec.Master.Attrs().Name
	if spec.MTU > spec.Master.Attrs().MTU {
		return nil, fmt.Errorf("field \"mtu\": %d is above the MTU %d of master %q: %w",
			spec.MTU, spec.Master.Attrs().MTU, masterName, config.ErrInvalid)
	}
	tmpName := TempName(spec.IfName)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = tmpName
	attrs.ParentIndex = spec.Master.Attrs().Index
	attrs.MTU = spec.MTU
	attrs.HardwareAddr = spec.MAC
	if !sameNS {
		attrs.Namespace = netlink.NsFd(int(contNS))
	}
	mv := &netlink.Macvlan{LinkAttrs: attrs, Mode: spec.Mode, BCQueueLen: spec.BCQueueLen}
	if err := masterH.LinkAdd(mv); err != nil {
		return nil, createError(err, masterName, spec.Mode)
	}

	link, err := contH.LinkByName(tmpName)
	if err == nil {
		err = contH.LinkSetName(link, spec.IfName)
		if errors.Is(err, syscall.EEXIST) {
			err = fmt.Errorf("%w: an interface named %q already exists in the container", ErrNameTaken, spec.IfName)
		}
	}
	if err == nil {
		link, err = contH.LinkByName(spec.IfName)
	}
	if err != nil {
		if link != nil {
			_ = contH.LinkDel(link) // best effort: the error below is what matters
		}
		return nil, fmt.Errorf("move macvlan %s into place as %q: %w", tmpName, spec.IfName, err)
	}
	return link, nil
}

func createError(err error, master string, mode netlink.MacvlanMode) error {
	switch {
	case errors.Is(err, syscall.EINVAL) && mode == netlink.MACVLAN_MODE_PASSTHRU:
		return fmt.Errorf("create passthru macvlan on master %q: %w (passthru takes the whole master: "+
			"it must have no other macvlan on it, and only one passthru macvlan at a time)", master, err)
	case errors.Is(err, syscall.EINVAL):
		return fmt.Errorf("create %s macvlan on master %q: %w (if a passthru macvlan already holds "+
			"the master, it admits no other macvlan; all macvlans on one master must also agree on passthru)",
			ModeName(mode), master, err)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("create macvlan on master %q: the MAC address is not usable: %w", master, err)
	case errors.Is(err, syscall.EOPNOTSUPP):
		return fmt.Errorf("create macvlan on master %q: the master does not support macvlan: %w", master, err)
	default:
		return fmt.Errorf("create macvlan on master %q: %w", master, err)
	}
}

// TempName is the name a new link has in the container between its
// creation and its rename to ifName: "mlv" and ten hex digits of a hash of
// ifName, so that it collides with no interface of the host (where older
// kernels checked names) and DEL can find and remove a link left under it
// by an ADD killed between the two steps. Within one container namespace
// each interface name has its own.
func TempName(ifName string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(ifName)) // a hash.Hash never fails to write
	return fmt.Sprintf("mlv%010x", h.Sum64()&(1<<40-1))
}

// Delete removes the macvlan link ifName from the namespace of h. A missing
// link is not an error (deleted is false). A link of another type is left in
// place and reported: DEL must not remove what another plugin made.
func Delete(h netlinksafe.Handle, ifName string) (deleted bool, err error) {
	link, err := h.LinkByName(ifName)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return false, nil
		}
		return false, fmt.Errorf("look up %q: %w", ifName, err)
	}
	if _, ok := link.(*netlink.Macvlan); !ok {
		return false, fmt.Errorf("interface %q is a %s link, not a macvlan: left in place", ifName, link.Type())
	}
	if err := h.LinkDel(link); err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) || errors.Is(err, syscall.ENODEV) {
			return false, nil
		}
		return false, fmt.Errorf("delete %q: %w", ifName, err)
	}
	return true, nil
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

// Expect is what Verify checks a container link against.
type Expect struct {
	Master      string // the master's name, for messages
	MasterIndex int    // 0: do not check the parent
	Mode        netlink.MacvlanMode
	MAC         net.HardwareAddr // nil: do not check
	MTU         int              // 0: do not check
}

// parentName names a parent link for messages; masterH is bound to the
// namespace the parent lives in.
func parentName(masterH netlinksafe.Handle, index int) string {
	if l, err := masterH.LinkByIndex(index); err == nil {
		return fmt.Sprintf("%q (index %d)", l.Attrs().Name, index)
	}
	return fmt.Sprintf("link index %d", index)
}

// Verify checks that ifName, in the namespace of h, is a macvlan link with
// the expected parent (in the namespace of masterH), mode, MAC and MTU.
func Verify(h, masterH netlinksafe.Handle, ifName string, want Expect) error {
	link, err := h.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("container interface %q: %w", ifName, err)
	}
	mv, ok := link.(*netlink.Macvlan)
	if !ok {
		return fmt.Errorf("container interface %q is a %s link, not a macvlan", ifName, link.Type())
	}
	a := mv.Attrs()
	switch {
	case want.MasterIndex != 0 && a.ParentIndex != want.MasterIndex:
		return fmt.Errorf("container interface %q is not a macvlan of master %q (index %d): its parent is %s",
			ifName, want.Master, want.MasterIndex, parentName(masterH, a.ParentIndex))
	case mv.Mode != want.Mode:
		return fmt.Errorf("container interface %q is in macvlan mode %s, want %s", ifName, ModeName(mv.Mode), ModeName(want.Mode))
	case want.MAC != nil && a.HardwareAddr.String() != want.MAC.String():
		return fmt.Errorf("container interface %q has MAC %s, want %s", ifName, a.HardwareAddr, want.MAC)
	case want.MTU != 0 && a.MTU != want.MTU:
		return fmt.Errorf("container interface %q has MTU %d, want %d", ifName, a.MTU, want.MTU)
	}
	return nil
}

// MACFromIPv4 derives a MAC address from an IPv4 address: 02:6d followed by
// the four address bytes. The first byte has the locally administered bit
// set and the group bit clear (IEEE 802, section 8.2), so the address is a
// unicast one that no vendor assigns; 0x6d ("m") keeps it apart from the
// 02:42 prefix of Docker's generated MACs.
func MACFromIPv4(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x02, 0x6d, b[0], b[1], b[2], b[3]}
}
