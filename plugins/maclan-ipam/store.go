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

// openStore opens the store a configuration names.
func openStore(conf *ipamconf.Conf, log *slog.Logger) (pluginStore, error) {
	if conf.Store.Type == "etcd" {
		return openEtcdStore(conf, log)
	}
	return disk.New(conf.Store.Dir, conf.Name, disk.Options{
		LockTimeout: lockTimeout(conf), Log: log,
	})
}
