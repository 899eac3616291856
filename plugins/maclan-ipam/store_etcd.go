//go:build etcd

package ipamplugin

// The etcd store, linked only into maclan-ipam-etcd (see handoff.go).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ipam/ipamconf"
	"github.com/maclan-cni/maclan/pkg/ipam/store/etcd"
)

const etcdBuiltIn = true

var _ pluginStore = (*etcd.Store)(nil)

func openEtcdStore(conf *ipamconf.Conf, log *slog.Logger) (pluginStore, error) {
	opts, err := etcdOptions(conf.Store)
	if err != nil {
		return nil, err
	}
	opts.LockTimeout, opts.Log = lockTimeout(conf), log
	return etcd.New(conf.Name, opts)
}

// etcdOptions turns a validated store object into etcd.Options, reading the
// TLS files it names.
func etcdOptions(sc ipamconf.StoreConf) (etcd.Options, error) {
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
		// etcd refuses a certificate outside its validity (RFC 5280 section
		// 4.1.2.5) with a bare TLS alert; say which and why here.
		if now := time.Now(); now.After(cert.Leaf.NotAfter) || now.Before(cert.Leaf.NotBefore) {
			return opts, fmt.Errorf("ipam.store.tls.cert %s: expired or not yet valid (valid from %s to %s): %w",
				sc.TLS.Cert, cert.Leaf.NotBefore.UTC().Format(time.RFC3339), cert.Leaf.NotAfter.UTC().Format(time.RFC3339), config.ErrInvalid)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	opts.TLS = tc
	return opts, nil
}

func (f *storeFlags) etcdOptions() (etcd.Options, error) {
	sc, err := f.etcdConf()
	if err != nil {
		return etcd.Options{}, err
	}
	opts, err := etcdOptions(sc)
	opts.Log = f.c.log
	return opts, err
}

func (f *storeFlags) etcdNetworks() ([]string, error) {
	opts, err := f.etcdOptions()
	if err != nil {
		return nil, err
	}
	return etcd.Networks(context.Background(), opts)
}

func (f *storeFlags) etcdOpen(network string) (operatorStore, error) {
	opts, err := f.etcdOptions()
	if err != nil {
		return nil, err
	}
	return etcd.New(network, opts)
}
