package doctor

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/maclan-cni/maclan/pkg/masterlink"
)

// checkMaster looks at the master: it exists, is up with a carrier, can
// carry the configured MTU, is not already owned by a bridge or a bond,
// and whether it is promiscuous. It returns the link when it exists.
func checkMaster(h netlinksafe.Handle, t *target) ([]Result, netlink.Link) {
	link, err := masterlink.Lookup(h, t.master, "host")
	if err != nil {
		return []Result{fail("master", "name an existing interface in \"master\" (ip link lists them), or leave it empty for the interface of the default route",
			"%v", err)}, nil
	}
	a := link.Attrs()
	var rs []Result
	switch {
	case a.Flags&net.FlagUp == 0:
		rs = append(rs, fail("master", fmt.Sprintf("ip link set %s up", a.Name), "%s is down", a.Name))
	case a.OperState == netlink.OperDown || a.OperState == netlink.OperLowerLayerDown:
		rs = append(rs, fail("master", "check the cable and the switch port, or that the hypervisor connects the virtual NIC",
			"%s is up but has no carrier (operstate %s)", a.Name, a.OperState))
	default:
		rs = append(rs, ok("master", "%s exists, is up and has a carrier (operstate %s)", a.Name, a.OperState))
	}
	rs = append(rs, checkMTU(t, a), checkRole(h, a), checkPromisc(a))
	return rs, link
}

func checkMTU(t *target, a *netlink.LinkAttrs) Result {
	switch {
	case t.conf == nil || t.conf.MTU == 0:
		return ok("mtu", "containers inherit the MTU %d of %s", a.MTU, a.Name)
	case t.conf.MTU > a.MTU:
		return fail("mtu", fmt.Sprintf("lower \"mtu\" to %d or less, or raise the MTU of %s", a.MTU, a.Name),
			"\"mtu\" %d is above the MTU %d of %s: every ADD fails", t.conf.MTU, a.MTU, a.Name)
	}
	return ok("mtu", "\"mtu\" %d fits the MTU %d of %s", t.conf.MTU, a.MTU, a.Name)
}

// checkRole: a bridge port or a bond member hands every frame it receives
// to its bridge or bond (its rx_handler), which leaves none for a macvlan:
// the kernel refuses the macvlan (EBUSY).
func checkRole(h netlinksafe.Handle, a *netlink.LinkAttrs) Result {
	if a.MasterIndex == 0 {
		return ok("role", "%s is neither a bridge port nor a bond member", a.Name)
	}
	upper, err := h.LinkByIndex(a.MasterIndex)
	if err != nil {
		return warn("role", "", "%s is enslaved to link index %d, which cannot be read: %v", a.Name, a.MasterIndex, err)
	}
	u := upper.Attrs().Name
	switch upper.Type() {
	case "bridge":
		return fail("role", fmt.Sprintf("make the bridge %s the master: its ports' frames belong to it", u),
			"%s is a port of bridge %s", a.Name, u)
	case "bond":
		return fail("role", fmt.Sprintf("make the bond %s the master: its members' frames belong to it", u),
			"%s is a member of bond %s", a.Name, u)
	}
	return warn("role", fmt.Sprintf("make %s the master, or take %s out of it", u, a.Name),
		"%s is enslaved to %s (%s)", a.Name, u, upper.Type())
}

func checkPromisc(a *netlink.LinkAttrs) Result {
	if a.Promisc > 0 {
		return ok("promisc", "%s is promiscuous (count %d): it takes in frames for every MAC", a.Name, a.Promisc)
	}
	return ok("promisc", "%s is not promiscuous: the kernel filters for the containers' MACs (or turns promiscuous mode on where the driver cannot)", a.Name)
}

// checkGateways asks each gateway for its MAC, once from the master's own
// MAC and once from a fresh one (probeFresh), at the same time. The
// gateway must answer the master; if it answers the master and not the
// fresh MAC, something between them drops frames from MACs it did not
// assign.
func checkGateways(master netlink.Link, gws []netip.Addr, hooks probeHooks) []Result {
	a := master.Attrs()
	var fresh net.HardwareAddr
	var freshGot answers
	var freshErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		fresh, freshGot, freshErr = probeFresh(master, gws, hooks)
	}()
	own, ownErr := askGateways(a.Index, a.HardwareAddr, gws)
	wg.Wait()
	var rs []Result
	for _, gw := range gws {
		q := "ARP"
		if gw.Is6() {
			q = "NDP"
		}
		if ownErr != nil {
			rs = append(rs, fail("gateway", "", "%s: %v", a.Name, ownErr))
			continue
		}
		if own[gw] == nil {
			rs = append(rs, fail("gateway", "check the gateway address in the IPAM ranges, the VLAN and cabling of the master, and that the gateway is up",
				"%s did not answer %s from %s's own MAC %s", gw, q, a.Name, a.HardwareAddr))
		} else {
			rs = append(rs, ok("gateway", "%s answered %s from %s (%s)", gw, q, a.Name, own[gw]))
		}
		rs = append(rs, macFilter(a, gw, q, own[gw], fresh, freshGot, freshErr))
	}
	return rs
}

// macFilter compares the two answers of one gateway.
func macFilter(a *netlink.LinkAttrs, gw netip.Addr, q string, own, fresh net.HardwareAddr, got answers, err error) Result {
	switch {
	case err != nil:
		return warn("mac-filter", "", "%s: the probe could not run: %v", a.Name, err)
	case own == nil:
		return skip("mac-filter", "%s: %s does not answer the master's own MAC either: see gateway", a.Name, gw)
	case got[gw] != nil:
		return ok("mac-filter", "%s: %s answered %s from the master's MAC and from a fresh one (%s)", a.Name, gw, q, fresh)
	}
	return fail("mac-filter", "allow forged transmits and promiscuous mode on the port group (VMware), MAC address spoofing on the virtual NIC (Hyper-V), "+
		"or port security off for the port (a switch or OpenStack); on clouds that pin one MAC per NIC (most VPCs) use ipvlan instead",
		"%s: the gateway %s answered %s from the master's MAC but not from a fresh one (%s): the switch or hypervisor drops frames from MACs it did not assign",
		a.Name, gw, q, fresh)
}
