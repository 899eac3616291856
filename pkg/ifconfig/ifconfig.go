// Package ifconfig puts an IPAM result on a container interface: addresses,
// link up, IPv6 duplicate address detection, routes, and the announcements
// that tell the LAN where the addresses now live. Links, addresses, routes
// and neighbours change through a netlink handle bound to the container's
// namespace; sysctls, the DAD wait and the IPv6 announcements act on the
// calling thread's network namespace, which must be the container's too.
package ifconfig

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrDuplicateAddress: IPv6 duplicate address detection found the address
// in use on the link (RFC 4862, section 5.4.5).
var ErrDuplicateAddress = errors.New("address already in use on the network")

// Options tune Configure.
type Options struct {
	// DADTimeout bounds the wait for IPv6 duplicate address detection.
	DADTimeout time.Duration
	// DADRetrans, if set, shortens IPv6 duplicate address detection on the
	// link for the duration of Configure: the first neighbour solicitation
	// goes out at once instead of after a random delay of up to a second,
	// and DAD ends DADRetrans after it instead of a second after
	// (RFC 4862, section 5.4; Linux's router_solicitation_delay and
	// retrans_time_ms). A host that holds the address answers within
	// microseconds on a LAN, so duplicates are still found.
	DADRetrans time.Duration
	// Announcements is how many gratuitous ARPs / unsolicited neighbour
	// advertisements to send per address once it is usable.
	Announcements int
	// Step, if set, is called at the end of each step with its name, for
	// timing (maclan's MACLAN_TRACE).
	Step func(name string)
}

func (o *Options) step(name string) {
	if o.Step != nil {
		o.Step(name)
	}
}

// Configure applies the addresses and routes of res to link through h,
// brings it up, waits for IPv6 DAD and announces the addresses. link is the
// container's view of the link (its index, name and MAC there), h is bound
// to the container's namespace, and the calling thread must be in it (see
// the package comment). Every IPConfig applies to link.
func Configure(h netlinksafe.Handle, link netlink.Link, res *current.Result, opts Options) error {
	ifName := link.Attrs().Name
	v4gw, v6gw, hasV6 := gateways(res.IPs)
	restore, err := setSysctls(ifName, hasV6, opts.DADRetrans)
	if err != nil {
		return err
	}
	defer restore()
	opts.step("configure: sysctls")
	if err := addAddressesUp(h, link, res.IPs); err != nil {
		return err
	}
	opts.step("configure: addresses+up")
	if hasV6 {
		if err := waitDAD(link, res.IPs, opts.DADTimeout); err != nil {
			return err
		}
		opts.step("configure: DAD wait")
	}
	for _, r := range res.Routes {
		if err := addRoute(h, link, r, v4gw, v6gw); err != nil {
			return err
		}
	}
	opts.step("configure: routes")
	defer opts.step("configure: announce")
	return announce(h, link, res.IPs, opts.Announcements)
}

// gateways returns the first gateway of each family in ips, and whether
// ips has an IPv6 address.
func gateways(ips []*current.IPConfig) (v4gw, v6gw net.IP, hasV6 bool) {
	for _, ipc := range ips {
		if ipc.Address.IP.To4() == nil {
			hasV6 = true
			if v6gw == nil {
				v6gw = ipc.Gateway
			}
		} else if v4gw == nil {
			v4gw = ipc.Gateway
		}
	}
	return v4gw, v6gw, hasV6
}

// setSysctls prepares ifName for its addresses and returns what puts the
// DAD timers back (see fastDAD), to be called once DAD is over.
func setSysctls(ifName string, hasV6 bool, dadRetrans time.Duration) (restore func(), err error) {
	// The kernel sends a gratuitous ARP when the link comes up with
	// arp_notify set (announce.go): the first of the IPv4 announcements.
	// Best effort: the gateway's resolution (announce) still tells the
	// gateway if this write fails.
	_, _ = sysctl.Sysctl("net/ipv4/conf/"+ifName+"/arp_notify", "1")
	if !hasV6 {
		return func() {}, nil
	}
	if err := enableIPv6(ifName); err != nil {
		return nil, err
	}
	if dadRetrans <= 0 {
		return func() {}, nil
	}
	return fastDAD(ifName, dadRetrans)
}

func addAddressesUp(h netlinksafe.Handle, link netlink.Link, ips []*current.IPConfig) error {
	ifName := link.Attrs().Name
	for _, ipc := range ips {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ipc.Address.IP, Mask: ipc.Address.Mask}}
		if err := h.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("add address %s to %q: %w", ipc.Address.String(), ifName, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %q up: %w", ifName, err)
	}
	return nil
}

func enableIPv6(ifName string) error {
	for _, name := range []string{"lo", ifName} {
		key := "net/ipv6/conf/" + name + "/disable_ipv6"
		if v, err := sysctl.Sysctl(key); err == nil && v == "0" {
			continue
		}
		if _, err := sysctl.Sysctl(key, "0"); err != nil {
			return fmt.Errorf("enable IPv6 on %q: %w", name, err)
		}
	}
	// Keep addresses if the link goes down and up again.
	_, _ = sysctl.Sysctl("net/ipv6/conf/"+ifName+"/keep_addr_on_down", "1") // best effort: older kernels lack it
	return nil
}

// fastDAD shortens DAD on ifName (see Options.DADRetrans) and returns a
// function that puts the kernel's values back once DAD is over, so that
// later neighbour discovery on the link keeps its usual timers.
func fastDAD(ifName string, retrans time.Duration) (restore func(), err error) {
	settings := []struct{ key, value string }{
		{"net/ipv6/conf/" + ifName + "/router_solicitation_delay", "0"},
		{"net/ipv6/neigh/" + ifName + "/retrans_time_ms", strconv.FormatInt(retrans.Milliseconds(), 10)},
	}
	var old []string
	restore = func() {
		for i, v := range old {
			_, _ = sysctl.Sysctl(settings[i].key, v) // best effort: only timers
		}
	}
	for _, s := range settings {
		v, err := sysctl.Sysctl(s.key)
		if err == nil {
			_, err = sysctl.Sysctl(s.key, s.value)
		}
		if err != nil {
			restore()
			return nil, fmt.Errorf("shorten IPv6 DAD on %q (%s): %w", ifName, s.key, err)
		}
		old = append(old, v)
	}
	return restore, nil
}

func addRoute(h netlinksafe.Handle, link netlink.Link, r *types.Route, v4gw, v6gw net.IP) error {
	gw := r.GW
	if gw == nil {
		if r.Dst.IP.To4() != nil {
			gw = v4gw
		} else {
			gw = v6gw
		}
	}
	route := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       &net.IPNet{IP: r.Dst.IP, Mask: r.Dst.Mask},
		Gw:        gw,
		Priority:  r.Priority,
	}
	if r.Table != nil {
		route.Table = *r.Table
	}
	if r.Scope != nil {
		route.Scope = netlink.Scope(*r.Scope)
	}
	if err := h.RouteAddEcmp(route); err != nil {
		return fmt.Errorf("add route %s via %s dev %s: %w", r.Dst.String(), gw, link.Attrs().Name, err)
	}
	return nil
}

// waitDAD waits until none of the IPv6 addresses of ips is tentative on
// link. An address that failed DAD, or one still tentative at the deadline,
// fails the wait: a container must not start with an address another host
// holds. The link-local address is not waited for: it is not ours to hand out.
func waitDAD(link netlink.Link, ips []*current.IPConfig, timeout time.Duration) error {
	want := map[string]bool{}
	for _, ipc := range ips {
		if ipc.Address.IP.To4() == nil {
			want[ipc.Address.IP.String()] = true
		}
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	updates := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	// Subscribe before the first check so that no change falls between the
	// check and the wait. A failed subscription leaves us polling.
	if err := netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{}); err != nil {
		updates = nil
	}
	tick := time.NewTicker(50 * time.Millisecond) // safety net if an event is missed
	defer tick.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		pending, err := tentative(link, want)
		if err != nil || len(pending) == 0 {
			return err
		}
		select {
		case <-updates:
		case <-tick.C:
		case <-deadline.C:
			return fmt.Errorf("IPv6 duplicate address detection on %q did not finish within %s for %v",
				link.Attrs().Name, timeout, pending)
		}
	}
}

func tentative(link netlink.Link, want map[string]bool) ([]string, error) {
	addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		return nil, fmt.Errorf("list IPv6 addresses of %q: %w", link.Attrs().Name, err)
	}
	var pending []string
	for _, a := range addrs {
		if !want[a.IP.String()] {
			continue
		}
		if a.Flags&unix.IFA_F_DADFAILED != 0 {
			return nil, fmt.Errorf("IPv6 address %s on %q failed duplicate address detection: %w",
				a.IP, link.Attrs().Name, ErrDuplicateAddress)
		}
		if a.Flags&unix.IFA_F_TENTATIVE != 0 {
			pending = append(pending, a.IP.String())
		}
	}
	return pending, nil
}
