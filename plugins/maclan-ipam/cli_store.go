package ipamplugin

import (
	"flag"
	"strings"

	"github.com/maclan-cni/maclan/pkg/ipam/ipamconf"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// storeFlags select the store an operator command acts on: the directory
// store under --data-dir, or, with --etcd-endpoints, the etcd store (whose
// per-host lock file is kept under --data-dir).
type storeFlags struct {
	c                 *cli
	dataDir           *string
	endpoints, prefix *string
	ca, cert, key     *string
}

func (c *cli) storeFlags(fs *flag.FlagSet) *storeFlags {
	f := &storeFlags{
		c:         c,
		dataDir:   fs.String("data-dir", ipamconf.DefaultDataDir, "data directory (etcd: where the host's lock file is)"),
		endpoints: fs.String("etcd-endpoints", "", "comma-separated etcd endpoints: act on the etcd store"),
		prefix:    fs.String("etcd-prefix", store.DefaultEtcdPrefix, "etcd key prefix"),
		ca:        fs.String("etcd-ca", "", "etcd TLS: CA file"),
		cert:      fs.String("etcd-cert", "", "etcd TLS: client certificate file"),
		key:       fs.String("etcd-key", "", "etcd TLS: client key file"),
	}
	return f
}

func (f *storeFlags) isEtcd() bool { return *f.endpoints != "" }

// etcdConf checks the etcd flags the way a network configuration's store
// object is checked.
func (f *storeFlags) etcdConf() (ipamconf.StoreConf, error) {
	sc := ipamconf.StoreConf{Type: "etcd", Dir: *f.dataDir}
	sc.Endpoints = strings.Split(*f.endpoints, ",")
	sc.Prefix = *f.prefix
	if *f.ca != "" || *f.cert != "" || *f.key != "" {
		sc.TLS = &ipamconf.EtcdTLS{CA: *f.ca, Cert: *f.cert, Key: *f.key}
	}
	if err := ipamconf.ValidateEtcd(&sc.EtcdConf); err != nil {
		return sc, usageError(err.Error())
	}
	return sc, nil
}

// networks lists the networks the store holds, or just the one named.
func (f *storeFlags) networks(network string) ([]string, error) {
	if !f.isEtcd() {
		return networks(*f.dataDir, network)
	}
	if network != "" {
		return []string{network}, nil
	}
	return f.etcdNetworks()
}

// operatorStore is what the operator commands need of a store: the Store
// and its own check.
type operatorStore interface {
	store.Store
	store.Checker
}

// open opens the store of one network.
func (f *storeFlags) open(network string) (operatorStore, error) {
	if !f.isEtcd() {
		return f.c.open(*f.dataDir, network)
	}
	if err := store.ValidateName("network name", network); err != nil {
		return nil, usageError(err.Error())
	}
	return f.etcdOpen(network)
}
