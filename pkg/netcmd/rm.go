package netcmd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

var rmFlags = []flagSpec{{names: []string{"force", "f"}, isBool: true}}

func rm(e *env, args []string) error {
	p, err := e.parse(args, rmFlags)
	if err != nil {
		return err
	}
	if len(p.args) == 0 {
		return usagef("\"rm\" requires at least 1 argument (the network name)")
	}
	var errs []error
	for _, name := range p.args {
		if err := e.rmNetwork(name, p.bool("force")); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := fmt.Fprintln(e.stdout, name); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

// rmNetwork removes the network's file; it refuses while an attachment
// holds a lease (Docker's "active endpoints"), unless force. The disk
// store's directory of the network goes too once no lease is held; with
// leases held (force) it stays, so that a network re-created under the
// name does not hand out their addresses again.
func (e *env) rmNetwork(name string, force bool) error {
	n, err := findNetwork(e.confDir, name)
	if err != nil {
		if nf := (notFoundError{}); force && errors.As(err, &nf) {
			return nil // Docker's --force: a missing network is no error
		}
		return err
	}
	held, err := e.heldBy(n)
	if err != nil && !force {
		return fmt.Errorf("%w (--force removes the network regardless)", err)
	}
	if len(held) > 0 && !force {
		return fmt.Errorf("network %s has active endpoints: %s hold leases; remove them first, or use --force", name, strings.Join(held, ", "))
	}
	if err := os.Remove(n.file); err != nil {
		return fmt.Errorf("remove network %s: %w", name, err)
	}
	if len(held) > 0 {
		fmt.Fprintf(e.stderr, "maclan network rm: %s removed; the leases of %s are kept in its store until released (maclan-ipam release)\n", name, strings.Join(held, ", "))
		return nil
	}
	return e.removeStore(n)
}

// heldBy names the attachments that hold leases in n.
func (e *env) heldBy(n network) ([]string, error) {
	leases, _, err := e.leases(n)
	if err != nil {
		return nil, err
	}
	cache := readCache(e.cacheDir, n.name)
	seen := map[attachment]bool{}
	var held []string
	for _, l := range leases {
		a := attachment{l.ContainerID, l.IfName}
		if !l.inUse() || seen[a] {
			continue
		}
		seen[a] = true
		who := shortID(l.ContainerID)
		if c := cache[a]; c.name != "" {
			who += " (" + c.name + ")"
		}
		held = append(held, who)
	}
	return held, nil
}

// removeStore deletes the disk store of a removed network if it still
// holds no lease: a container started from the file just before it went
// keeps its store. The etcd store is shared by every host and is left.
func (e *env) removeStore(n network) error {
	if n.ipam == nil || n.ipam.Store.Type != "disk" {
		return nil
	}
	held, err := e.heldBy(n)
	if err != nil || len(held) > 0 {
		return err
	}
	dir := filepath.Join(n.ipam.Store.Dir, n.name)
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("network %s removed, but not its lease store: %w", n.name, err)
	}
	return nil
}
