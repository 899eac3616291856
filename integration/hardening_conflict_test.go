//go:build integration

package integration

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// probeAnswerer is a device on the switch that answers every ARP probe, for
// any address, with an ARP reply claiming the address (RFC 5227, section
// 2.1.1: a reply whose sender IP address is the probed address): proxy ARP
// gone wrong, or a hostile host draining the pool.
type probeAnswerer struct {
	fd      int
	ifIndex int
	mac     net.HardwareAddr
	stop    chan struct{}
	done    chan struct{}
	answers atomic.Int64
}

// startProbeAnswerer opens a packet socket on eth0 of the namespace n and
// answers probes from a goroutine until stopped (at the end of the test at
// the latest).
func startProbeAnswerer(t *testing.T, n *netNS) *probeAnswerer {
	t.Helper()
	eth := n.link(t, "eth0")
	r := &probeAnswerer{ifIndex: eth.Attrs().Index, mac: eth.Attrs().HardwareAddr, stop: make(chan struct{}), done: make(chan struct{})}
	err := n.ns.Do(func(ns.NetNS) error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("rogue packet socket: %w", err)
		}
		r.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: r.ifIndex})
	})
	if err != nil {
		t.Fatal(err)
	}
	go r.serve()
	t.Cleanup(r.halt)
	return r
}

// serve answers until stop is closed. The poll timeout only lets it see
// stop; it is not a synchronisation.
func (r *probeAnswerer) serve() {
	defer close(r.done)
	buf := make([]byte, 1500)
	for {
		select {
		case <-r.stop:
			return
		default:
		}
		fds := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 50); err != nil || n <= 0 {
			continue
		}
		nr, from, err := unix.Recvfrom(r.fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			continue
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		r.answer(buf[:nr])
	}
}

// answer replies to p if it is an ARP probe (an Ethernet/IPv4 request with
// sender IP address zero): "target IP is mine", unicast to the prober.
func (r *probeAnswerer) answer(p []byte) {
	if len(p) < 28 || binary.BigEndian.Uint16(p[0:]) != 1 || binary.BigEndian.Uint16(p[2:]) != unix.ETH_P_IP ||
		p[4] != 6 || p[5] != 4 || binary.BigEndian.Uint16(p[6:]) != 1 || binary.BigEndian.Uint32(p[14:]) != 0 {
		return
	}
	prober, target := p[8:14], p[24:28]
	reply := make([]byte, 28)
	copy(reply, p[:6])                       // Ethernet, IPv4, 6, 4
	binary.BigEndian.PutUint16(reply[6:], 2) // reply
	copy(reply[8:14], r.mac)
	copy(reply[14:18], target) // the claim
	copy(reply[18:24], prober)
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: r.ifIndex, Halen: 6}
	copy(to.Addr[:], prober)
	if unix.Sendto(r.fd, reply, 0, to) == nil {
		r.answers.Add(1)
	}
}

// halt stops the goroutine and closes the socket; a second call is a no-op.
func (r *probeAnswerer) halt() {
	select {
	case <-r.stop:
		return
	default:
	}
	close(r.stop)
	<-r.done
	_ = unix.Close(r.fd) // nothing to undo
}

// conflictRecords returns the network's conflict records, address ->
// creation time, failing t if one names another MAC than owner.
func (n *testNet) conflictRecords(t *testing.T, owner string) map[string]time.Time {
	t.Helper()
	recs := map[string]time.Time{}
	for _, row := range n.lsLeases() {
		if row["conflict"] == nil {
			continue
		}
		if row["conflict"] != owner {
			t.Errorf("conflict record %v names %v, want %s", row["ip"], row["conflict"], owner)
		}
		created, err := time.Parse(time.RFC3339Nano, fmt.Sprint(row["created"]))
		if err != nil {
			t.Fatalf("conflict record %v: created %v: %v", row["ip"], row["created"], err)
		}
		recs[fmt.Sprint(row["ip"])] = created
	}
	return recs
}

// TestHardeningConflictAnswerAll: a device on the LAN answers every ARP
// probe. With conflictDetection, each ADD (and each retry of it, after the
// runtime's DEL) fails after at most three conflict records, naming the
// device's MAC and the likely cause, and leaves nothing in the container
// nor any lease. The device gone, once the records have outlived
// ipam.conflictLifetime (1s here), every address of the range is handed out
// again: none is lost for good. Before, one ADD probed and recorded up to
// 16 addresses, and the records lasted until an operator released them.
func TestHardeningConflictAnswerAll(t *testing.T) {
	if ipamType != "maclan-ipam" || pluginType != "maclan" {
		t.Skip("conflict detection is maclan-ipam's, through maclan")
	}
	const (
		first, last = "198.51.100.170", "198.51.100.181" // 12 addresses: 4 attempts of 3
		lifetime    = time.Second
		perADD      = 3 // maclan-ipam's cap per range set per ADD
	)
	rogueNS, rogueMAC := newRogueNS(t, "198.51.100.245/24")
	rogue := startProbeAnswerer(t, rogueNS)

	n := newNet(t)
	conf := n.mainConf()
	conf["conflictDetection"] = true
	conf["ipam"] = map[string]any{
		"type":             ipamType,
		"dataDir":          n.dataDir,
		"conflictLifetime": lifetime.String(),
		"ranges":           []any{[]any{map[string]any{"subnet": subnet4, "rangeStart": first, "rangeEnd": last, "gateway": gw4}}},
	}
	list := n.list("1.0.0", conf)

	attempts := 0
	for range 2 {
		ctr := newContainer(t)
		a := n.attach(list, ctr, "eth0")
		for try := range 2 { // the runtime retries after a failed ADD and its DEL
			attempts++
			start := time.Now()
			_, err := a.add()
			wantErrorMentions(t, err, rogueMAC, "answering every probe", fmt.Sprintf("giving up after %d", perADD))
			wantOnlyLoopback(t, ctr)
			if err := a.del(); err != nil {
				t.Errorf("DEL after the failed ADD: %v", err)
			}
			recs := n.conflictRecords(t, rogueMAC)
			made := 0
			for _, created := range recs {
				if !created.Before(start) {
					made++
				}
			}
			t.Logf("attempt %d (container %s, try %d): %d conflict records made, %d in all, %d answers so far",
				attempts, ctr.name, try+1, made, len(recs), rogue.answers.Load())
			if made == 0 || made > perADD {
				t.Errorf("attempt %d made %d conflict records, want 1 to %d", attempts, made, perADD)
			}
			if len(recs) > perADD*attempts {
				t.Errorf("after %d attempts %d conflict records, want at most %d", attempts, len(recs), perADD*attempts)
			}
			if held := n.leaseOwners(); len(held) != 1 || held["maclan-conflict"] == nil {
				t.Errorf("leases after the failed ADD: %v, want only conflict records", held)
			}
		}
	}
	if t.Failed() {
		return
	}

	// The device leaves the LAN; the records expire.
	rogue.halt()
	removeContainer(t, rogueNS)
	waitFor(t, "conflict records to outlive ipam.conflictLifetime", func() (bool, string) {
		for ip, created := range n.conflictRecords(t, rogueMAC) {
			if time.Since(created) <= lifetime {
				return false, fmt.Sprintf("%s recorded %s ago", ip, time.Since(created).Round(time.Millisecond))
			}
		}
		return true, ""
	})

	// Every address of the range is probed again and handed out.
	var got []string
	for range 12 {
		res := n.attach(list, newContainer(t), "eth0").mustAdd()
		v4, _ := resultIPs(t, res)
		got = append(got, bareIP(v4))
	}
	var want []string
	for a := netip.MustParseAddr(first); a.Compare(netip.MustParseAddr(last)) <= 0; a = a.Next() {
		want = append(want, a.String())
	}
	sortAddrs(got)
	if !slices.Equal(got, want) {
		t.Errorf("after the records expired, ADDs got %v, want every address of the range %v", got, want)
	}
	if recs := n.conflictRecords(t, rogueMAC); len(recs) != 0 {
		t.Errorf("conflict records left after every address was handed out: %v", recs)
	}
}
