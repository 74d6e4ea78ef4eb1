// Package pki makes the lab's certificate authority and the certificates
// and kubeconfigs of every lab component. Keys are ECDSA P-256: quick to
// generate, so `weft lab up` spends no time on RSA.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA signs every lab certificate.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
}

// Dir is where the lab keeps its PKI files.
type Dir string

// Path returns the file path for a name inside the PKI directory.
func (d Dir) Path(name string) string { return filepath.Join(string(d), name) }

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// NewCA creates a self-signed CA and writes ca.crt/ca.key.
func NewCA(d Dir) (*CA, error) {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "weft-lab-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	if err := os.WriteFile(d.Path("ca.crt"), ca.CertPEM, 0o644); err != nil {
		return nil, err
	}
	if err := writeKey(d.Path("ca.key"), key); err != nil {
		return nil, err
	}
	return ca, nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	b, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b}), 0o600)
}

// Spec describes one leaf certificate.
type Spec struct {
	Name   string // file base name: NAME.crt, NAME.key
	CN     string
	Orgs   []string
	IPs    []net.IP
	DNS    []string
	Server bool
	Client bool
}

// Issue writes NAME.crt and NAME.key signed by the CA.
func (ca *CA) Issue(d Dir, s Spec) (certPath, keyPath string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: s.CN, Organization: s.Orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		IPAddresses:  s.IPs,
		DNSNames:     s.DNS,
	}
	if s.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if s.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return "", "", err
	}
	certPath, keyPath = d.Path(s.Name+".crt"), d.Path(s.Name+".key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certPath, keyPath, writeKey(keyPath, key)
}

// ServiceAccountKey writes sa.key (private, PKCS#8) and sa.pub for token signing.
func ServiceAccountKey(d Dir) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	if err := writeKey(d.Path("sa.key"), key); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	return os.WriteFile(d.Path("sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

// WriteKubeconfig writes a kubeconfig that uses a client certificate.
func WriteKubeconfig(path, server, caPath, certPath, keyPath, user string) error {
	content := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: weft-lab
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: weft-lab
  context:
    cluster: weft-lab
    user: %s
current-context: weft-lab
`, server, caPath, user, certPath, keyPath, user)
	return os.WriteFile(path, []byte(content), 0o600)
}
