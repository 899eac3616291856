// Package shim lets a host reach the containers it runs on a macvlan master.
//
// A macvlan child cannot talk to its parent: frames the master sends never
// reach its own children. The shim is one more macvlan child of the master,
// in bridge mode, left in the host namespace with a host address, and a host
// route per container address through it; siblings in bridge mode talk to
// each other inside the host, so host and containers meet through the shim.
//
// The shim of a master is made on first use and removed when its last
// attachment goes. Its addresses, one per family at most, are configured or
// leased from the network's IPAM when the shim is made (and released when
// it goes). Attachments are recorded as small files under a state
// directory (on /run: the routes they describe do not outlive a reboot
// either), and every change happens under a lock file per master, so that
// concurrent ADDs and DELs on one master see one consistent shim.
//
// The plugin runs as root, so the state directory must be one that no one
// else can write (package safefs): the lock refuses a state directory or
// master directory that is a symbolic link, owned by another user or
// writable by group or others, and records are opened without following a
// symbolic link, only if regular, and size-bounded.
package shim

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/maclan-cni/maclan/pkg/flock"
	"github.com/maclan-cni/maclan/pkg/nldump"
	"github.com/maclan-cni/maclan/pkg/safefs"
)

// Read limits: an attachment record is one address a line, a lease token a
// network configuration (see Shim.Lease).
const (
	maxRecordSize = 64 << 10
	maxTokenSize  = 16 << 20
)

// DefaultStateDir holds the lock and attachment records of every shim, in
// one sub-directory per network namespace (see StateDir).
const DefaultStateDir = "/run/maclan/shim"

// StateDir returns the state directory for shims in the calling thread's
// network namespace: masters are named per namespace, so two namespaces
// (two test labs on one machine, say) must not share records.
func StateDir(base string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return "", fmt.Errorf("identify the network namespace: %w", err)
	}
	return filepath.Join(base, fmt.Sprintf("netns-%d", st.Ino)), nil
}

// routeProtocol marks the routes the shim adds, so that they can be told
// from routes added by others ("ip route show proto 0x6d").
const routeProtocol = netlink.RouteProtocol(0x6d)

// Shim is the shim of one master in the current (host) network namespace.
type Shim struct {
	H      netlinksafe.Handle // bound to the host namespace
	Master string             // master interface name
	// Addresses are the host's addresses on the shim, at most one per
	// family, each held as a host address (/32, /128). Empty: Lease gives
	// them.
	Addresses []netip.Addr
	// Lease takes the shim's addresses from the IPAM when the shim is made
	// or has lost them; it must be idempotent (an IPAM ADD for the shim's
	// own attachment). Its token, which says how to give the addresses
	// back, is kept beside the records: the network whose container removes
	// the shim may not be the one that leased its addresses. Release takes
	// that token when the shim is removed, and must be idempotent too. Both
	// are called under the shim's lock.
	Lease    func() (addrs []netip.Addr, token []byte, err error)
	Release  func(token []byte) error
	StateDir string        // DefaultStateDir unless testing
	Timeout  time.Duration // lock wait

	addrs []netip.Addr // the shim's addresses in effect, set by ensure or Verify
}

// Name is the shim's interface name: "shim-" and the master's name, cut to
// the kernel's 15 bytes.
func Name(master string) string {
	n := "shim-" + master
	if len(n) > 15 {
		n = n[:15]
	}
	return n
}

func (s *Shim) dir() string { return filepath.Join(s.StateDir, s.Master) }

// leaseFile holds the token of the IPAM lease of the shim's addresses.
func (s *Shim) leaseFile() string { return filepath.Join(s.StateDir, s.Master+".lease") }

func (s *Shim) lock() (func(), error) {
	if err := safefs.MkdirAll(s.dir(), 0o700); err != nil {
		return nil, fmt.Errorf("shim state directory: %w", err)
	}
	// The lock and lease files live one level up, in the directory of
	// the network namespace, under the base directory (DefaultStateDir):
	// both must be trusted too, whoever made them. (MkdirAll checked any
	// it made, /run/maclan included.)
	for _, d := range []string{s.StateDir, filepath.Dir(s.StateDir)} {
		if err := safefs.CheckDir(d); err != nil {
			return nil, fmt.Errorf("shim state directory: %w", err)
		}
	}
	unlock, err := flock.Lock(filepath.Join(s.StateDir, s.Master+".lock"), s.Timeout)
	if err != nil {
		return nil, fmt.Errorf("lock the shim of master %q: %w", s.Master, err)
	}
	return unlock, nil
}

// Attach routes ips (the container's addresses of the shim address's
// family) through the shim, making the shim first if needed, and records
// them under id. It is idempotent.
func (s *Shim) Attach(id string, ips []netip.Addr) (err error) {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()

	link, err := s.ensure()
	if err != nil {
		return err
	}
	ips = s.sameFamily(ips)
	if err := writeRecord(filepath.Join(s.dir(), id), ips); err != nil {
		return err
	}
	defer func() {
		if err == nil {
			return
		}
		// Undo: the caller's ADD fails, so nothing of it may stay.
		for _, ip := range ips {
			_ = s.H.RouteDel(s.route(link, ip)) // best effort: absent routes are fine
		}
		_ = os.Remove(filepath.Join(s.dir(), id)) // best effort: a stale record only keeps the shim
	}()
	for _, ip := range ips {
		if err := s.H.RouteReplace(s.route(link, ip)); err != nil {
			return fmt.Errorf("route %s through shim %q: %w", ip, Name(s.Master), err)
		}
	}
	return nil
}

// Detach removes the routes recorded under id and the record, and removes
// the shim if no attachment is left. A missing record or shim is fine.
func (s *Shim) Detach(id string) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()

	rec := filepath.Join(s.dir(), id)
	ips, err := readRecord(rec)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	link, lerr := s.H.LinkByName(Name(s.Master))
	if lerr == nil {
		for _, ip := range ips {
			if err := s.H.RouteDel(s.route(link, ip)); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("remove route %s from shim %q: %w", ip, link.Attrs().Name, err)
			}
		}
	}
	if err := os.Remove(rec); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove shim record %s: %w", rec, err)
	}
	left, err := records(s.dir())
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return nil
	}
	if lerr == nil {
		if err := s.H.LinkDel(link); err != nil && !errors.Is(err, syscall.ENODEV) {
			return fmt.Errorf("remove shim %q: %w", link.Attrs().Name, err)
		}
	}
	// After the link, so that a released address is never on a shim; a
	// failure here is retried by the runtime's next DEL, which finds no
	// record left and comes here again.
	return s.release()
}

// release gives the shim's leased addresses back, if it has any.
func (s *Shim) release() error {
	token, err := safefs.ReadFile(s.leaseFile(), maxTokenSize)
	if errors.Is(err, os.ErrNotExist) || s.Release == nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the lease of shim %q: %w", Name(s.Master), err)
	}
	if err := s.Release(token); err != nil {
		return fmt.Errorf("release the addresses of shim %q: %w", Name(s.Master), err)
	}
	if err := os.Remove(s.leaseFile()); err != nil {
		return fmt.Errorf("remove the lease record of shim %q: %w", Name(s.Master), err)
	}
	return nil
}

// FindMaster returns the master under whose shim id is recorded, for a DEL
// whose configuration no longer says (the default-route master has gone).
func FindMaster(stateDir, id string) (string, bool) {
	masters, err := os.ReadDir(stateDir)
	if err != nil {
		return "", false
	}
	for _, m := range masters {
		fi, err := os.Lstat(filepath.Join(stateDir, m.Name(), id))
		if err == nil && fi.Mode().IsRegular() && m.IsDir() {
			return m.Name(), true
		}
	}
	return "", false
}

// Verify reports a missing or down shim, a shim without its addresses, or
// a missing route for one of ips.
func (s *Shim) Verify(ips []netip.Addr) error {
	link, err := s.H.LinkByName(Name(s.Master))
	if err != nil {
		return fmt.Errorf("host shim %q of master %q is missing: %w", Name(s.Master), s.Master, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("host shim %q is down", link.Attrs().Name)
	}
	held, err := s.held(link)
	if err != nil {
		return err
	}
	if len(s.Addresses) > 0 {
		for _, a := range s.Addresses {
			if !slices.Contains(held, a) {
				return fmt.Errorf("host shim %q does not hold its address %s", link.Attrs().Name, a)
			}
		}
		held = s.Addresses
	}
	if len(held) == 0 {
		return fmt.Errorf("host shim %q holds no address", link.Attrs().Name)
	}
	s.addrs = held
	routes, err := s.H.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: link.Attrs().Index}, netlink.RT_FILTER_OIF)
	if err != nil {
		return fmt.Errorf("list routes of shim %q: %w", link.Attrs().Name, err)
	}
	for _, ip := range s.sameFamily(ips) {
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
			return r.Dst != nil && r.Dst.IP.Equal(ip.AsSlice()) && r.Protocol == routeProtocol
		}) {
			return fmt.Errorf("host shim %q has no route to %s", link.Attrs().Name, ip)
		}
	}
	return nil
}

// sameFamily keeps the addresses of the families the shim has an address
// of: a route needs a source of its own family.
func (s *Shim) sameFamily(ips []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, ip := range ips {
		if s.source(ip).IsValid() {
			out = append(out, ip)
		}
	}
	return out
}

// source is the shim's address of ip's family, or the zero Addr.
func (s *Shim) source(ip netip.Addr) netip.Addr {
	for _, a := range s.addrs {
		if a.Is4() == ip.Is4() {
			return a
		}
	}
	return netip.Addr{}
}

func (s *Shim) route(link netlink.Link, ip netip.Addr) *netlink.Route {
	return &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())},
		Src:       s.source(ip).AsSlice(),
		Scope:     netlink.SCOPE_LINK,
		Protocol:  routeProtocol,
	}
}

// ensure returns the shim, making it (and restoring the routes of every
// recorded attachment) if it is missing: after a reboot of the link, or if
// someone deleted it by hand.
func (s *Shim) ensure() (netlink.Link, error) {
	name := Name(s.Master)
	if link, err := s.H.LinkByName(name); err == nil {
		if _, ok := link.(*netlink.Macvlan); !ok {
			return nil, fmt.Errorf("interface %q exists and is not a macvlan shim", name)
		}
		if err := s.H.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("set shim %q up: %w", name, err)
		}
		return link, s.ensureAddresses(link)
	}
	master, err := s.H.LinkByName(s.Master)
	if err != nil {
		return nil, fmt.Errorf("master %q of the host shim: %w", s.Master, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.ParentIndex = master.Attrs().Index
	if err := s.H.LinkAdd(&netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_BRIDGE}); err != nil && !errors.Is(err, syscall.EEXIST) {
		return nil, fmt.Errorf("create host shim %q on master %q: %w", name, s.Master, err)
	}
	link, err := s.H.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("look up new host shim %q: %w", name, err)
	}
	if err := s.ensureAddresses(link); err != nil {
		_ = s.H.LinkDel(link) // best effort: the next ADD makes it again
		return nil, err
	}
	if err := s.H.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set shim %q up: %w", name, err)
	}
	return link, s.restoreRoutes(link)
}

// ensureAddresses puts the shim's addresses on link: the configured ones,
// else those it already holds, else a lease from the IPAM.
func (s *Shim) ensureAddresses(link netlink.Link) error {
	addrs := s.Addresses
	if len(addrs) == 0 {
		held, err := s.held(link)
		if err != nil {
			return err
		}
		if addrs = held; len(addrs) == 0 {
			if s.Lease == nil {
				return fmt.Errorf("host shim %q: no address configured and no IPAM to lease one", link.Attrs().Name)
			}
			if addrs, err = s.lease(); err != nil {
				return fmt.Errorf("lease an address for shim %q: %w", link.Attrs().Name, err)
			}
		}
	}
	for _, a := range addrs {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}
		if a.Is6() {
			addr.Flags = unix.IFA_F_NODAD // configured for this host, or leased to the shim
		}
		if err := s.H.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("address %s on shim %q: %w", a, link.Attrs().Name, err)
		}
	}
	s.addrs = addrs
	return nil
}

// lease takes addresses from the IPAM and records how to give them back.
// A lease recorded from another network's IPAM (the shim was deleted by
// hand, and this network's ADD makes it again) is given back first.
func (s *Shim) lease() ([]netip.Addr, error) {
	addrs, token, err := s.Lease()
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, errors.New("the IPAM gave no address")
	}
	if old, err := safefs.ReadFile(s.leaseFile(), maxTokenSize); err == nil && !bytes.Equal(old, token) && s.Release != nil {
		_ = s.Release(old) // best effort: the worst left is one lease, which maclan-ipam release frees
	}
	if err := writeFileAtomic(s.leaseFile(), token); err != nil {
		_ = s.Release(token) // best effort, as above
		return nil, fmt.Errorf("record the lease: %w", err)
	}
	return addrs, nil
}

// held lists the host addresses on link, leaving out IPv6 link-local ones.
func (s *Shim) held(link netlink.Link) ([]netip.Addr, error) {
	list, err := nldump.AddrList(s.H, link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of shim %q: %w", link.Attrs().Name, err)
	}
	var out []netip.Addr
	for _, a := range list {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ip = ip.Unmap(); ok && !ip.IsLinkLocalUnicast() && !slices.ContainsFunc(out, func(o netip.Addr) bool { return o.Is4() == ip.Is4() }) {
			out = append(out, ip)
		}
	}
	return out, nil
}

func (s *Shim) restoreRoutes(link netlink.Link) error {
	names, err := records(s.dir())
	if err != nil {
		return err
	}
	for _, name := range names {
		ips, err := readRecord(filepath.Join(s.dir(), name))
		if err != nil {
			return err
		}
		for _, ip := range ips {
			if err := s.H.RouteReplace(s.route(link, ip)); err != nil {
				return fmt.Errorf("restore route %s through shim %q: %w", ip, link.Attrs().Name, err)
			}
		}
	}
	return nil
}

// records lists the attachment records in dir, skipping the temporary file
// that a crash in writeRecord may leave, and anything that is not a
// regular file.
func records(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read shim records: %w", err)
	}
	var names []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".tmp") && e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

func writeRecord(path string, ips []netip.Addr) error {
	var b strings.Builder
	for _, ip := range ips {
		b.WriteString(ip.String() + "\n")
	}
	if err := writeFileAtomic(path, []byte(b.String())); err != nil {
		return fmt.Errorf("write shim record: %w", err)
	}
	return nil
}

// writeFileAtomic replaces path through a temporary file and a rename, so
// that a crash leaves the old content or the new (records skips the
// temporary file). The state is on /run and needs no fsync: it does not
// outlive a reboot, and neither do the routes it describes. The temporary
// file is created afresh (O_EXCL, after removing a leftover), so a name
// planted there is never written through; the rename replaces whatever
// path names.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f, err := safefs.Open(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close() // the write error is the one to report
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readRecord(path string) ([]netip.Addr, error) {
	b, err := safefs.ReadFile(path, maxRecordSize)
	if err != nil {
		return nil, fmt.Errorf("read shim record: %w", err)
	}
	return parseRecord(path, b)
}

// parseRecord decodes what writeRecord wrote: one address a line.
func parseRecord(path string, b []byte) ([]netip.Addr, error) {
	var ips []netip.Addr
	for _, line := range strings.Fields(string(b)) {
		ip, err := netip.ParseAddr(line)
		if err != nil {
			return nil, fmt.Errorf("shim record %s: %w", path, err)
		}
		if ip.Zone() != "" {
			return nil, fmt.Errorf("shim record %s: address %q has a zone", path, line)
		}
		ips = append(ips, ip)
	}
	return ips, nil
}
