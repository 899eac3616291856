package arp

import (
	"net"
	"net/netip"
	"slices"
)

// Prober asks the LAN whether IPv4 addresses are in use, out of one
// interface. Leases cover every container; a probe finds what leases cannot
// know: a printer or a forgotten static host on the same subnet.
type Prober struct {
	IfIndex int
	MAC     net.HardwareAddr // the interface's
	// Local are the host's own addresses on the interface. They are in use
	// (by MAC), though no probe would hear the host answer itself.
	Local []netip.Addr
	Opts  ProbeOptions
}

// Owner returns the MAC of the device using ip, or nil if none answered.
// It acts in the calling thread's network namespace.
func (p *Prober) Owner(ip netip.Addr) (net.HardwareAddr, error) {
	if slices.Contains(p.Local, ip) {
		return p.MAC, nil
	}
	return Probe(p.IfIndex, p.MAC, ip, p.Opts)
}
