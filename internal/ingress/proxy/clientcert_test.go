package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"weft.dev/weft/internal/ingress/route"
)

// issue makes a key pair signed by parent (self-signed when parent is nil).
func issue(t *testing.T, name string, parent *tls.Certificate) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	signer, signerKey := tmpl, any(key)
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage, tmpl.ExtKeyUsage = true, true, x509.KeyUsageCertSign, nil
	} else {
		signer, signerKey = parent.Leaf, parent.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// TestGatewayPortValidatesClientCertificates: a port with client CAs
// refuses handshakes without a certificate they sign; with insecure
// fallback it lets every client in; the check follows snapshot swaps
// without reopening the port.
func TestGatewayPortValidatesClientCertificates(t *testing.T) {
	p, _ := newProxy(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		p.RunPorts(ctx, "127.0.0.1", func() *http.Server { return &http.Server{ReadHeaderTimeout: 5 * time.Second} })
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	ca, other := issue(t, "ca", nil), issue(t, "other ca", nil)
	good, bad := issue(t, "good client", &ca), issue(t, "bad client", &other)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Leaf)
	srvCert := httptest.NewTLSServer(http.NotFoundHandler())
	srvCert.Close()
	b := route.Backend{Namespace: "ns", Service: "echo", Port: 80}
	tb := route.NewTable()
	tb.Host("").AddRule(route.Prefix, "/", &route.Rule{Source: "HTTPRoute ns/echo", Backends: []route.WeightedBackend{{Backend: b, Weight: 1}}})
	port := freePort(t)
	swap := func(optional bool) {
		p.Swap(&Snapshot{Table: route.NewTable(), Endpoints: map[route.Backend][]string{b: {backendEcho(t, "echo")}},
			Ports: map[int]*Port{port: {Hostnames: []string{""}, Tables: []*route.Table{tb}, TLS: true,
				Certs: map[string]*tls.Certificate{"": &srvCert.TLS.Certificates[0]}, ClientCAs: pool, ClientCertOptional: optional}}})
	}
	get := func(cert *tls.Certificate) error {
		cfg := &tls.Config{InsecureSkipVerify: true}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
		resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d/", port))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	swap(false)
	for i := 0; i < 100; i++ { // the port opens after the swap
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := get(&good); err != nil {
		t.Errorf("client with a certificate the CA signed: %v", err)
	}
	if err := get(&bad); err == nil {
		t.Error("client with another CA's certificate let in")
	}
	if err := get(nil); err == nil {
		t.Error("client without a certificate let in")
	}
	swap(true)
	for _, c := range []*tls.Certificate{&good, &bad, nil} {
		if err := get(c); err != nil {
			t.Errorf("insecure fallback refused a client: %v", err)
		}
	}
}
