package etcdtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI is a throw-away certificate authority for a test cluster: it signs
// the members' certificates (one per member, for its client and its peer
// listener) and the clients' certificates. Keys are ECDSA P-256, written
// as PEM files (PKCS #8 keys) in Dir.
type PKI struct {
	Dir    string
	CAFile string // the CA certificate, PEM

	ca  *x509.Certificate
	key crypto.Signer
}

// NewPKI makes a new CA named name, its certificate written to
// Dir/<name>-ca.pem.
func NewPKI(dir, name string) (*PKI, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("etcdtest: CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name + " test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("etcdtest: CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("etcdtest: CA certificate: %w", err)
	}
	p := &PKI{Dir: dir, CAFile: filepath.Join(dir, name+"-ca.pem"), ca: ca, key: key}
	return p, writePEM(p.CAFile, "CERTIFICATE", der)
}

// CertOptions describe one certificate.
type CertOptions struct {
	// IPs are the subject alternative names a server certificate needs
	// (RFC 5280 section 4.2.1.6); clients need none.
	IPs []net.IP
	// Server and Client set the extended key usages (RFC 5280 section
	// 4.2.1.12): an etcd member's certificate is both, since it also
	// dials its peers.
	Server, Client bool
	// Expired makes a certificate whose validity ended an hour ago.
	Expired bool
}

// Issue signs a new certificate named name and writes it and its key to
// Dir/<name>.pem and Dir/<name>-key.pem.
func (p *PKI) Issue(name string, o CertOptions) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("etcdtest: key of %s: %w", name, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		IPAddresses:  o.IPs,
	}
	if o.Expired {
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Hour)
	}
	if o.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if o.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	if !o.Server && !o.Client {
		return "", "", errors.New("etcdtest: a certificate for neither server nor client")
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, key.Public(), p.key)
	if err != nil {
		return "", "", fmt.Errorf("etcdtest: certificate of %s: %w", name, err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("etcdtest: key of %s: %w", name, err)
	}
	certFile, keyFile = filepath.Join(p.Dir, name+".pem"), filepath.Join(p.Dir, name+"-key.pem")
	if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
		return "", "", err
	}
	return certFile, keyFile, writePEM(keyFile, "PRIVATE KEY", pk)
}

// Member issues the certificate of a member listening on ip and returns
// its ServerTLS.
func (p *PKI) Member(name string, ip net.IP) (*ServerTLS, error) {
	cert, key, err := p.Issue(name, CertOptions{IPs: []net.IP{ip}, Server: true, Client: true})
	if err != nil {
		return nil, err
	}
	return &ServerTLS{CA: p.CAFile, Cert: cert, Key: key}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func writePEM(path, typ string, der []byte) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("etcdtest: %w", err)
	}
	return nil
}
