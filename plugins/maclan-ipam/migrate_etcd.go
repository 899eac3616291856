//go:build etcd

package ipamplugin

import (
	"context"
	"errors"
	"fmt"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/etcd"
)

// migrateStores copies the directory store of one network on this host
// into the etcd store: every lease, with its attachment and creation time.
// It holds the directory store's lock throughout, so no ADD on this host
// can slip in on the old store, and the etcd store's host lock, so none
// slips in on the new one from this host. It may be repeated: leases
// already copied are skipped, addresses held in etcd by another attachment
// are reported. The directory store is left as it was (its leases are the
// record of what was copied); remove it once the network's configuration
// names the etcd store and a last run found nothing new.
func (c *cli) migrateStores(args []string) (err error) {
	fs := c.flags("migrate")
	from := fs.String("from", "", "store to copy from: disk")
	to := fs.String("to", "", "store to copy to: etcd")
	network := fs.String("network", "", "network")
	sf := c.storeFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *from != "disk" || *to != "etcd" || *network == "" || !sf.isEtcd() {
		return usageError("migrate between stores needs --from disk --to etcd --network N --etcd-endpoints E")
	}
	src, err := c.open(*sf.dataDir, *network)
	if err != nil {
		return err
	}
	defer closeStore(src, &err)
	opts, err := sf.etcdOptions()
	if err != nil {
		return err
	}
	dst, err := etcd.New(*network, opts)
	if err != nil {
		return err
	}
	defer closeStore(dst, &err)

	ctx := context.Background()
	var leases []store.Lease
	var held int
	var conflicts error
	err = store.WithLock(ctx, src, func() error {
		var lerr error
		if leases, lerr = src.List(ctx); lerr != nil {
			return fmt.Errorf("read the directory store (run fsck first): %w", lerr)
		}
		return store.WithLock(ctx, dst, func() error {
			var ierr error
			held, ierr = dst.Import(ctx, leases)
			if errors.Is(ierr, store.ErrReserved) {
				conflicts = ierr
				return nil
			}
			return ierr
		})
	})
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(c.stdout, "network %s: %d of %d leases of %s now held in etcd at %s under %s\n",
		*network, held, len(leases), src.Dir(), dst.Endpoints(), dst.Root()); err != nil {
		return err
	}
	if conflicts != nil {
		return fmt.Errorf("not copied, the address is another attachment's in etcd: %w", conflicts)
	}
	return nil
}
