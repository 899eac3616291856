package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/disk"
	"github.com/maclan-cni/maclan/pkg/ipam/store/etcd"
)

// pluginStore is what the plugin needs of a store: the Store itself and
// STATUS's proof that it can be written now.
type pluginStore interface {
	store.Store
	CheckWritable() error
}

var (
	_ pluginStore = (*disk.Store)(nil)
	_ pluginStore = (*etcd.Store)(nil)
)

// openStore opens the store a configuration names.
func openStore(conf *config.IPAMConf, log *slog.Logger) (pluginStore, error) {
	if conf.Store.Type == "etcd" {
		opts, err := etcdOptions(conf.Store)
		if err != nil {
			return nil, err
		}
		opts.LockTimeout, opts.Log = timeFromConf(conf), log
		return etcd.New(conf.Name, opts)
	}
	return disk.New(conf.Store.Dir, conf.Name, disk.Options{
		LockTimeout: timeFromConf(conf), Log: log,
	})
}

// etcdOptions turns a validated store object into etcd.Options, reading the
// TLS files it names.
func etcdOptions(sc config.IPAMStoreConf) (etcd.Options, error) {
	opts := etcd.Options{
		Endpoints:      sc.Endpoints,
		Prefix:         sc.Prefix,
		DialTimeout:    time.Duration(sc.DialTimeout),
		RequestTimeout: time.Duration(sc.RequestTimeout),
		LockDir:        sc.Dir,
	}
	if sc.TLS == nil {
		return opts, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if sc.TLS.CA != "" {
		pem, err := os.ReadFile(sc.TLS.CA)
		if err != nil {
			return opts, fmt.Errorf("ipam.store.tls.ca: %w", errors.Join(config.ErrInvalid, err))
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return opts, fmt.Errorf("ipam.store.tls.ca %s: no PEM certificate in it: %w", sc.TLS.CA, config.ErrInvalid)
		}
	}
	if sc.TLS.Cert != "" {
		cert, err := tls.LoadX509KeyPair(sc.TLS.Cert, sc.TLS.Key)
		if err != nil {
			return opts, fmt.Errorf("ipam.store.tls.cert/key: %w", errors.Join(config.ErrInvalid, err))
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	opts.TLS = tc
	return opts, nil
}
