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
)

// Mode is a macvlan mode (see ip-link(8), "macvlan"). The zero Mode is
// bridge, the mode CNI's macvlan plugins default to.
type Mode int

// The macvlan modes maclan makes links in.
const (
	Bridge Mode = iota
	Private
	VEPA
	Passthru
)

// modes holds each Mode's kernel value and its name, iproute2's.
var modes = [...]struct {
	kernel netlink.MacvlanMode
	name   string
}{
	Bridge:   {netlink.MACVLAN_MODE_BRIDGE, "bridge"},
	Private:  {netlink.MACVLAN_MODE_PRIVATE, "private"},
	VEPA:     {netlink.MACVLAN_MODE_VEPA, "vepa"},
	Passthru: {netlink.MACVLAN_MODE_PASSTHRU, "passthru"},
}

func (m Mode) valid() bool { return m >= 0 && int(m) < len(modes) }

func (m Mode) String() string {
	if !m.valid() {
		return fmt.Sprintf("Mode(%d)", int(m))
	}
	return modes[m].name
}

// kernel is m's value in netlink; an invalid Mode is netlink's
// MACVLAN_MODE_DEFAULT, which the kernel refuses to verify against.
func (m Mode) kernel() netlink.MacvlanMode {
	if !m.valid() {
		return netlink.MACVLAN_MODE_DEFAULT
	}
	return modes[m].kernel
}

// kernelModeName names a mode the kernel reports, which may be one maclan
// never makes (source, say).
func kernelModeName(k netlink.MacvlanMode) string {
	for _, m := range modes {
		if m.kernel == k {
			return m.name
		}
	}
	return fmt.Sprintf("mode(%d)", k)
}

// ErrNameTaken: the container gained an interface of the requested name
// while the link was being made (a concurrent ADD of the same attachment).
var ErrNameTaken = errors.New("interface name taken")

// Spec describes the macvlan link to create.
type Spec struct {
	Master     netlink.Link
	Mode       Mode
	MTU        int // 0: inherit the master's; above it, the kernel refuses the link
	MAC        net.HardwareAddr
	BCQueueLen uint32
	IfName     string // name inside the container
}

// Create makes the macvlan link through masterH (bound to the master's
// namespace) directly inside the container namespace contNS under the name
// spec.IfName, and looks it up through contH (bound to the container
// namespace). When the master is itself in the container, masterH and contH
// are bound to the same namespace and contNS is ignored. The returned link is
// the one seen in the container, still down. On error nothing is left.
//
// Recent kernels check a new link's name in the namespace the link is
// made in (rtnetlink's IFLA_NET_NS_FD), so the name is the container's own
// to check. Older ones check the namespace of the socket that asks, the
// master's, and refuse a name the host has (often both are eth0). Either
// way an EEXIST is settled by the way that works on every kernel: a
// temporary name, then a rename, which fails with ErrNameTaken if the
// container has the name (createRenamed). So an older kernel pays one
// refused request more than that way alone, and a recent one saves the
// rename and a lookup.
func Create(masterH, contH netlinksafe.Handle, contNS netns.NsHandle, sameNS bool, spec Spec) (netlink.Link, error) {
	err := masterH.LinkAdd(newLink(spec, spec.IfName, contNS, sameNS))
	if errors.Is(err, syscall.EEXIST) {
		return createRenamed(masterH, contH, contNS, sameNS, spec)
	}
	if err != nil {
		return nil, createError(err, spec.Master.Attrs().Name, spec.Mode)
	}
	link, err := contH.LinkByName(spec.IfName)
	if err != nil {
		// Made but not found: remove it, so that nothing is left.
		if _, derr := Delete(contH, spec.IfName); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, fmt.Errorf("look up the new macvlan %q in the container: %w", spec.IfName, err)
	}
	return link, nil
}

func newLink(spec Spec, name string, contNS netns.NsHandle, sameNS bool) *netlink.Macvlan {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.ParentIndex = spec.Master.Attrs().Index
	attrs.MTU = spec.MTU
	attrs.HardwareAddr = spec.MAC
	if !sameNS {
		attrs.Namespace = netlink.NsFd(int(contNS))
	}
	return &netlink.Macvlan{LinkAttrs: attrs, Mode: spec.Mode.kernel(), BCQueueLen: spec.BCQueueLen}
}

// createRenamed is Create when the name was refused: the link is made
// under a temporary name that collides with no interface of the host
// (TempName) and renamed to spec.IfName in the container.
func createRenamed(masterH, contH netlinksafe.Handle, contNS netns.NsHandle, sameNS bool, spec Spec) (netlink.Link, error) {
	tmpName := TempName(spec.IfName)
	if err := masterH.LinkAdd(newLink(spec, tmpName, contNS, sameNS)); err != nil {
		if errors.Is(err, syscall.EEXIST) {
			// The temporary name is the ifname's own: another ADD of this
			// attachment is making its link right now (or one was killed
			// between create and rename, which DEL cleans up).
			return nil, fmt.Errorf("%w: a link named %s, the temporary name of %q, already exists in the container: %w",
				ErrNameTaken, tmpName, spec.IfName, err)
		}
		return nil, createError(err, spec.Master.Attrs().Name, spec.Mode)
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

func createError(err error, master string, mode Mode) error {
	switch {
	case errors.Is(err, syscall.EINVAL) && mode == Passthru:
		return fmt.Errorf("create passthru macvlan on master %q: %w (passthru takes the whole master: "+
			"it must have no other macvlan on it, and only one passthru macvlan at a time)", master, err)
	case errors.Is(err, syscall.EINVAL):
		return fmt.Errorf("create %s macvlan on master %q: %w (if a passthru macvlan already holds "+
			"the master, it admits no other macvlan; all macvlans on one master must also agree on passthru)",
			mode, master, err)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("create macvlan on master %q: the MAC address is not usable: %w", master, err)
	case errors.Is(err, syscall.EOPNOTSUPP):
		return fmt.Errorf("create macvlan on master %q: the master does not support macvlan: %w", master, err)
	default:
		return fmt.Errorf("create macvlan on master %q: %w", master, err)
	}
}

// TempName is the name a new link has in the container between its
// creation and its rename to ifName, on a kernel that needs the rename
// (createRenamed): "mlv" and ten hex digits of a hash of
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

// Expect is what Verify checks a container link against.
type Expect struct {
	Master      string // the master's name, for messages
	MasterIndex int    // 0: do not check the parent
	Mode        Mode
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
	case mv.Mode != want.Mode.kernel():
		return fmt.Errorf("container interface %q is in macvlan mode %s, want %s", ifName, kernelModeName(mv.Mode), want.Mode)
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
