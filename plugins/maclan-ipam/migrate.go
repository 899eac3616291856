package ipamplugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/ipamconf"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/disk"
	"github.com/maclan-cni/maclan/pkg/safefs"
)

// migrate adopts the leases of the reference host-local plugin. host-local
// keeps, in /var/lib/cni/networks/<network>/, one file per address named by
// the address and holding "<container ID>\r\n<ifname>" (or, written by old
// versions, the container ID alone), plus last_reserved_ip.<set> and lock.
// migrate holds host-local's own lock meanwhile, so a host-local ADD on the
// node cannot slip in, and it may be repeated: leases already adopted are
// skipped. Switch the network's ipam type once it has run, then run it once
// more to catch anything host-local handed out in between.
//
// migrate runs as root over a directory it did not make: every file in it
// is opened without following a symbolic link and without blocking on a
// FIFO, and only a small regular file is read (package safefs). A lease
// file that is not one is reported as not adopted; a cursor that is not
// one is ignored, being a hint.
func (c *cli) migrate(args []string) (err error) {
	if betweenStores(args) {
		return c.migrateStores(args)
	}
	fs := c.flags("migrate")
	from := fs.String("from-host-local", "", "host-local data directory of the network")
	network := fs.String("network", "", "network")
	dataDir := fs.String("data-dir", ipamconf.DefaultDataDir, "maclan-ipam data directory")
	ifName := fs.String("ifname", "eth0", "interface name for old host-local records that lack one")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *from == "" || *network == "" {
		return usageError("migrate needs --from-host-local and --network")
	}
	if err := store.ValidateName("network name", *network); err != nil {
		return usageError(err.Error())
	}
	if err := store.ValidateIfName(*ifName); err != nil {
		return usageError("--ifname: " + err.Error())
	}
	src := *from
	if fi, err := os.Stat(filepath.Join(src, *network)); err == nil && fi.IsDir() {
		src = filepath.Join(src, *network)
	}
	// Migrating into the directory host-local used (its dataDir is ours:
	// the field keeps its meaning) shares one lock file, which the store's
	// own lock below takes; a second flock of it would wait for ever.
	if !sameDir(src, filepath.Join(*dataDir, *network)) {
		unlock, err := lockHostLocal(src, store.DefaultLockTimeout)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, unlock()) }()
	}

	st, err := disk.New(*dataDir, *network, disk.Options{Log: c.log.With("network", *network)})
	if err != nil {
		return err
	}
	defer closeStore(st, &err)
	ctx := context.Background()
	var adopted int
	var skipped []error
	err = store.WithLock(ctx, st, func() error {
		entries, err := os.ReadDir(src)
		if err != nil {
			return fmt.Errorf("read %s: %w", src, err)
		}
		var leases []store.Lease
		for _, e := range entries {
			name := e.Name()
			if set, ok := strings.CutPrefix(name, "last_reserved_ip."); ok {
				if err := adoptCursor(ctx, st, filepath.Join(src, name), set); err != nil {
					return err
				}
				continue
			}
			ip, perr := netip.ParseAddr(name)
			if perr != nil || !e.Type().IsRegular() {
				continue // lock, and anything else that is not a lease
			}
			l, err := readHostLocalLease(filepath.Join(src, name), ip.Unmap(), *ifName)
			if err != nil {
				skipped = append(skipped, err)
				continue
			}
			leases = append(leases, l)
		}
		// Import writes them in bulk; already adopted leases are skipped,
		// addresses held by someone else are reported.
		var ierr error
		adopted, ierr = st.Import(ctx, leases)
		if ierr != nil && !errors.Is(ierr, store.ErrReserved) {
			return ierr
		}
		if ierr != nil {
			skipped = append(skipped, ierr)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(c.stdout, "network %s: %d leases of %s now held in the maclan-ipam store, %d problems\n",
		*network, adopted, src, len(skipped)); err != nil {
		return err
	}
	if len(skipped) > 0 {
		return fmt.Errorf("not adopted: %w", errors.Join(skipped...))
	}
	return nil
}

// sameDir reports whether a and b name one directory.
func sameDir(a, b string) bool {
	fa, erra := os.Stat(a)
	fb, errb := os.Stat(b)
	if erra != nil || errb != nil {
		return filepath.Clean(a) == filepath.Clean(b)
	}
	return os.SameFile(fa, fb)
}

// Read limits for host-local's files: a lease holds a container ID and an
// interface name (store.ValidateAttachment bounds both), a cursor one
// address.
const (
	maxHostLocalLease  = 4 << 10
	maxHostLocalCursor = 256
)

func readHostLocalLease(path string, ip netip.Addr, defaultIfName string) (store.Lease, error) {
	f, err := safefs.Open(path, os.O_RDONLY, 0)
	if err != nil {
		return store.Lease{}, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close() //nolint:errcheck // read-only
	fi, err := f.Stat()
	if err != nil {
		return store.Lease{}, fmt.Errorf("stat %s: %w", path, err)
	}
	b, err := safefs.ReadAll(f, maxHostLocalLease)
	if err != nil {
		return store.Lease{}, fmt.Errorf("read %s: %w", path, err)
	}
	l, err := parseHostLocalLease(b, ip, defaultIfName)
	if err != nil {
		return store.Lease{}, fmt.Errorf("%s: %w", path, err)
	}
	l.Created = fi.ModTime()
	return l, nil
}

// parseHostLocalLease decodes host-local's "<container ID>\r\n<ifname>",
// or the container ID alone as old versions wrote it.
func parseHostLocalLease(b []byte, ip netip.Addr, defaultIfName string) (store.Lease, error) {
	id, ifName, found := strings.Cut(strings.TrimSpace(string(b)), "\r\n")
	if !found {
		ifName = defaultIfName
	}
	l := store.Lease{IP: ip, ContainerID: strings.TrimSpace(id), IfName: strings.TrimSpace(ifName)}
	if err := store.ValidateAttachment(l.ContainerID, l.IfName); err != nil {
		return store.Lease{}, err
	}
	return l, nil
}

func adoptCursor(ctx context.Context, st store.Store, path, set string) error {
	b, err := safefs.ReadFile(path, maxHostLocalCursor)
	if errors.Is(err, safefs.ErrNotRegular) || errors.Is(err, safefs.ErrTooLarge) {
		return nil // a hint only, as below
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	ip, ok := parseHostLocalCursor(b)
	if !ok || store.ValidateName("range set", set) != nil {
		return nil // a hint only: host-local's walk position is not worth failing for
	}
	return st.SetCursor(ctx, set, ip)
}

// parseHostLocalCursor decodes last_reserved_ip.<set>: one address.
func parseHostLocalCursor(b []byte) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(strings.TrimSpace(string(b)))
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

// lockHostLocal takes the flock that host-local itself takes on
// <dir>/lock, giving up after timeout.
func lockHostLocal(dir string, timeout time.Duration) (func() error, error) {
	f, err := safefs.Open(filepath.Join(dir, "lock"), os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(dir); serr != nil {
			return nil, fmt.Errorf("host-local directory: %w", serr)
		}
		return func() error { return nil }, nil // host-local never ran here
	}
	if err != nil {
		return nil, fmt.Errorf("open host-local lock: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f.Close, nil // closing drops the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close() // the flock error is the one to report
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		if time.Now().After(deadline) {
			_ = f.Close() // the timeout is the one to report
			return nil, fmt.Errorf("lock %s: %w", dir, store.ErrLockTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// betweenStores tells `migrate --from disk --to etcd` from the host-local
// form.
func betweenStores(args []string) bool {
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && (name == "from" || name == "to") {
			return true
		}
	}
	return false
}
