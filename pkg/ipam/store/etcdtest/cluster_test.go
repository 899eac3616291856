package etcdtest

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestClusterTLS starts three members on loopback that speak TLS to
// clients and peers, and checks that a client with a certificate of the
// cluster's CA is served and one without a certificate is refused.
func TestClusterTLS(t *testing.T) {
	pki, err := NewPKI(t.TempDir(), "t")
	if err != nil {
		t.Fatal(err)
	}
	ports, err := freePorts(9)
	if err != nil {
		t.Fatal(err)
	}
	var members []Options
	for i := range 3 {
		tc, err := pki.Member("m"+string(rune('0'+i)), net.IPv4(127, 0, 0, 1))
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, Options{ClientAddr: ports[3*i], PeerAddr: ports[3*i+1], MetricsAddr: ports[3*i+2], TLS: tc,
			Health: func(string) error { return httpHealth("http://" + ports[3*i+2]) }})
	}
	c := StartCluster(t, members)
	cert, key, err := pki.Issue("client", CertOptions{Client: true})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	get := func(certs []tls.Certificate) error {
		cl := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}}
		resp, err := cl.Get(c.Members[0].Endpoint() + "/health")
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}
	if !strings.HasPrefix(c.Members[0].Endpoint(), "https://") {
		t.Errorf("endpoint %s, want https", c.Members[0].Endpoint())
	}
	if err := get([]tls.Certificate{pair}); err != nil {
		t.Errorf("client with a certificate: %v", err)
	}
	if err := get(nil); err == nil {
		t.Error("client without a certificate was served")
	}
	if pid := c.Members[1].Pid(); pid == 0 || c.Members[1].Exited() {
		t.Errorf("member 1: pid %d, exited %v", pid, c.Members[1].Exited())
	}
	c.Members[1].Stop()
	if !c.Members[1].Exited() {
		t.Error("member 1 still running after Stop")
	}
	if err := c.Members[1].Start(); err != nil {
		t.Errorf("restart member 1: %v", err)
	}
}
