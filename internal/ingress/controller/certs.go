package controller

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var metav1UpdateOptions = metav1.UpdateOptions{}

// Certs picks a TLS certificate by SNI: the host's own, a wildcard's,
// else the default (self-signed, made at start, as ingress-nginx's fake
// certificate).
type Certs struct {
	byHost atomic.Pointer[map[string]*tls.Certificate]
	dflt   *tls.Certificate
}

// NewCerts makes the store with a fresh default certificate.
func NewCerts() (*Certs, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "weft ingress default certificate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0), DNSNames: []string{"weft-ingress.invalid"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	c := &Certs{dflt: &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
	c.Set(nil)
	return c, nil
}

// Set replaces every host's certificate at once.
func (c *Certs) Set(byHost map[string]*tls.Certificate) {
	m := map[string]*tls.Certificate{}
	for h, cert := range byHost {
		m[strings.ToLower(h)] = cert
	}
	c.byHost.Store(&m)
}

// Get is a tls.Config's GetCertificate.
func (c *Certs) Get(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	m := *c.byHost.Load()
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if cert := m[name]; cert != nil {
		return cert, nil
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if cert := m["*"+name[i:]]; cert != nil {
			return cert, nil
		}
	}
	return c.dflt, nil
}
