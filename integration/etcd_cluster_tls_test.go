//go:build integration

package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store/etcdtest"
)

// TestEtcdClusterTLSErrors: a host whose TLS settings do not fit the
// cluster gets a clear error from ADD and STATUS, in time (the dial
// timeout, not a hang), leaves nothing behind, and never falls back to
// plain HTTP. Then the right settings work on the same host.
func TestEtcdClusterTLSErrors(t *testing.T) {
	c := startLabCluster(t, clusterOpts{})
	h := newSimHost(t, 0)
	other, err := etcdtest.NewPKI(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	expCert, expKey, err := c.pki.Issue("expired-client", etcdtest.CertOptions{Client: true, Expired: true})
	if err != nil {
		t.Fatal(err)
	}
	strangerCert, strangerKey, err := other.Issue("stranger", etcdtest.CertOptions{Client: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		tls      map[string]any
		http     bool
		code     uint
		mentions []string
	}{
		{name: "expired client certificate", tls: map[string]any{"ca": c.pki.CAFile, "cert": expCert, "key": expKey},
			code: 7, mentions: []string{"ipam.store.tls.cert", "expired"}},
		{name: "client certificate of another CA", tls: map[string]any{"ca": c.pki.CAFile, "cert": strangerCert, "key": strangerKey},
			code: 11, mentions: []string{"etcd at https://", "client certificate"}},
		{name: "CA that does not match", tls: map[string]any{"ca": other.CAFile, "cert": c.cert, "key": c.key},
			code: 11, mentions: []string{"etcd at https://", "certificate signed by unknown authority"}},
		{name: "key that does not match its certificate", tls: map[string]any{"ca": c.pki.CAFile, "cert": c.cert, "key": strangerKey},
			code: 7, mentions: []string{"ipam.store.tls.cert/key", "does not match"}},
		{name: "no client certificate", tls: map[string]any{"ca": c.pki.CAFile},
			code: 11, mentions: []string{"etcd at https://", "client certificate"}},
		{name: "http endpoints of a TLS cluster", http: true,
			code: 11, mentions: []string{"etcd at http://", "use https://"}},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			e := c.newNet()
			e.tls = tc.tls
			if tc.http {
				for i := range e.endpoints {
					e.endpoints[i] = strings.Replace(e.endpoints[i], "https://", "http://", 1)
				}
			}
			at := e.attachments(t, h, 1)[0]
			start := time.Now()
			at.add()
			took := time.Since(start)
			t.Logf("ADD after %s: %v", took.Round(time.Millisecond), at.err)
			wantCNIError(t, at.err, tc.code, tc.mentions...)
			wantOnlyLoopback(t, at.ctr)
			err := at.status()
			t.Logf("STATUS: %v", err)
			if err == nil {
				t.Error("STATUS succeeded")
			}
		})
	}
	e := c.newNet()
	at := e.attachments(t, h, 1)[0]
	if at.add(); at.err != nil {
		t.Fatalf("ADD with the right certificates: %v", at.err)
	}
	if err := at.del(); err != nil {
		t.Errorf("DEL: %v", err)
	}
}
