package ipamplugin

import (
	"log/slog"

	"github.com/maclan-cni/maclan/pkg/ipam/ipamconf"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/disk"
)

// pluginStore is what the plugin needs of a store: the Store itself and
// STATUS's proof that it can be written now.
type pluginStore interface {
	store.Store
	CheckWritable() error
}

var _ pluginStore = (*disk.Store)(nil)

// openStore opens the store a configuration names, for a call of this
// host and boot (lc).
//
// The leases this boot takes in a directory store are written without
// fsync when nothing needs them after the boot (volatileLeases): a power
// cut, the one thing that could lose them, ends their containers, and the
// store repairs itself at the next boot (disk/boot.go).
func openStore(conf *ipamconf.Conf, lc lifecycle, log *slog.Logger) (pluginStore, error) {
	if conf.Store.Type == "etcd" {
		return openEtcdStore(conf, log)
	}
	opts := disk.Options{LockTimeout: lockTimeout(conf), Log: log}
	if lc.idErr == nil {
		opts.Boot = disk.Boot{Host: lc.id.Host, ID: lc.id.Boot}
		opts.Volatile = volatileLeases(conf)
	}
	return disk.New(conf.Store.Dir, conf.Name, opts)
}

// volatileLeases reports whether no lease of this boot is needed after it:
// the sweep after a reboot releases them (reclaimAfterReboot, the
// default), and none is to become a sticky hold for its workload
// (stickyFor, off by default), which the sweep makes of the leases it
// releases and which must then have survived the power cut.
func volatileLeases(conf *ipamconf.Conf) bool {
	return conf.Reclaim() && conf.StickyFor <= 0
}
