package doctor

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/maclan-cni/maclan/pkg/arp"
)

// probeOptions: how long to ask. A gateway on a LAN answers within
// milliseconds; three questions over half a second, then a wait of a
// second, leave room for a busy router or a hypervisor's ARP proxy.
var probeARP = arp.ProbeOptions{Probes: 3, Interval: 250 * time.Millisecond, Wait: time.Second}

const probeNDPWait = 1500 * time.Millisecond

// answers is what the gateways said to one MAC address: for each gateway,
// the MAC that answered (nil: none).
type answers map[netip.Addr]net.HardwareAddr

// askGateways asks each gateway for its MAC from the interface ifIndex,
// whose MAC is mac, in the calling thread's namespace: ARP for IPv4
// (an RFC 5227 probe, sender address 0.0.0.0, so that no neighbour cache
// on the LAN learns anything from it and no address, leased or not, is
// claimed), NDP for IPv6 (a neighbour solicitation from the link-local
// address derived from mac, RFC 4861 section 7.2.2, which no lease can
// hold).
func askGateways(ifIndex int, mac net.HardwareAddr, gws []netip.Addr) (answers, error) {
	got := answers{}
	for _, gw := range gws {
		var who net.HardwareAddr
		var err error
		if gw.Is4() {
			who, err = arp.Probe(ifIndex, mac, gw, probeARP)
		} else {
			who, err = solicit(ifIndex, mac, gw, probeNDPWait)
		}
		if err != nil {
			return got, fmt.Errorf("ask %s: %w", gw, err)
		}
		got[gw] = who
	}
	return got, nil
}

// freshMAC returns a random locally administered unicast MAC (IEEE 802,
// section 8.2: the U/L bit set, the I/G bit clear), which no vendor
// assigns and so no switch or hypervisor can have been told about.
func freshMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, err
	}
	mac[0] = mac[0]&^1 | 2
	return mac, nil
}

// probeHooks lets the tests stop a probe half-way: once the probe link is
// up, Held is written a line and Hold is read until its end.
type probeHooks struct {
	Hold io.Reader
	Held io.Writer
}

// probeFresh asks the gateways from a new MAC: a macvlan on the master,
// with a fresh locally administered MAC, inside a network namespace that
// exists only in one thread of this process. The namespace is never
// named nor bind-mounted: the thread and one descriptor hold it, so when
// the process ends, however it ends (SIGKILL included), the kernel frees
// the namespace and deletes the macvlan with it. Nothing of the probe is
// ever in the host namespace: the link is created straight inside the
// throwaway namespace.
func probeFresh(master netlink.Link, gws []netip.Addr, hooks probeHooks) (net.HardwareAddr, answers, error) {
	mac, err := freshMAC()
	if err != nil {
		return nil, nil, fmt.Errorf("fresh MAC: %w", err)
	}
	// The handle is opened here, in the host namespace, where the master is.
	host, err := netlinksafe.NewHandle()
	if err != nil {
		return nil, nil, fmt.Errorf("netlink handle: %w", err)
	}
	defer host.Close()
	type outcome struct {
		got answers
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		// The thread is never unlocked: when this goroutine returns, the
		// runtime ends the thread, and with it the namespace.
		runtime.LockOSThread()
		got, err := probeInThrowawayNS(host, master, mac, gws, hooks)
		done <- outcome{got, err}
	}()
	o := <-done
	return mac, o.got, o.err
}

func probeInThrowawayNS(host netlinksafe.Handle, master netlink.Link, mac net.HardwareAddr, gws []netip.Addr, hooks probeHooks) (answers, error) {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("new network namespace: %w", err)
	}
	nsFd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the probe's namespace: %w", err)
	}
	defer unix.Close(nsFd)
	// Keep the kernel quiet in the namespace: no IPv6 address, router
	// solicitation or MLD report with the fresh MAC; only the probe's own
	// frames leave. Absent when the kernel has no IPv6 at all.
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("disable IPv6 in the probe's namespace: %w", err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "probe0"
	attrs.ParentIndex = master.Attrs().Index
	attrs.HardwareAddr = mac
	attrs.Namespace = netlink.NsFd(nsFd)
	if err := host.LinkAdd(&netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_BRIDGE}); err != nil {
		if errors.Is(err, syscall.EINVAL) {
			return nil, fmt.Errorf("create a probe macvlan on %s: %w (a passthru macvlan holds the master?)", master.Attrs().Name, err)
		}
		return nil, fmt.Errorf("create a probe macvlan on %s: %w", master.Attrs().Name, err)
	}
	h, err := netlinksafe.NewHandle() // bound to the thread's namespace: the probe's
	if err != nil {
		return nil, fmt.Errorf("netlink handle in the probe's namespace: %w", err)
	}
	defer h.Close()
	link, err := h.LinkByName(attrs.Name)
	if err != nil {
		return nil, fmt.Errorf("find the probe link: %w", err)
	}
	// Removed at once on the way out; the namespace's end would remove it
	// too, a little later.
	defer func() { _ = h.LinkDel(link) }() // best effort: it goes with the namespace anyway
	if err := h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set the probe link up: %w", err)
	}
	if hooks.Hold != nil {
		fmt.Fprintf(hooks.Held, "maclan doctor: probe %s held\n", mac)
		_, _ = io.Copy(io.Discard, bufio.NewReader(hooks.Hold)) // a test hook: its errors end the hold
	}
	return askGateways(link.Attrs().Index, mac, gws)
}
