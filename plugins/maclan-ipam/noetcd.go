//go:build !etcd

package ipamplugin

import (
	"log/slog"

	"github.com/maclan-cni/maclan/pkg/ipam/ipamconf"
)

// The default build has no etcd client: every etcd call is handed to
// maclan-ipam-etcd before it gets here (see handoff.go). These are the
// answers if it does anyway.

const etcdBuiltIn = false

func openEtcdStore(*ipamconf.Conf, *slog.Logger) (pluginStore, error) { return nil, errNoEtcd }

func (f *storeFlags) etcdNetworks() ([]string, error) { return nil, errNoEtcd }

func (f *storeFlags) etcdOpen(string) (operatorStore, error) { return nil, errNoEtcd }

func (c *cli) migrateStores([]string) error { return errNoEtcd }
