package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/ingress/route"
)

// serverCert is a serving certificate for names, signed by ca.
func serverCert(t *testing.T, ca *tls.Certificate, names []string, uris []string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "backend"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: names,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, u := range uris {
		pu, _ := url.Parse(u)
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Leaf, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestBackendTLSPolicyChecksTheBackend: a backend a BackendTLSPolicy
// covers is reached over TLS with the policy's server name, and only
// when its certificate chains to the policy's CA and names what the
// policy asks; an unusable policy answers 500 without reaching it.
func TestBackendTLSPolicyChecksTheBackend(t *testing.T) {
	ca, otherCA := issue(t, "ca", nil), issue(t, "other", nil)
	cert := serverCert(t, &ca, []string{"abc.example.com"}, []string{"spiffe://abc.example.com/id"})
	var gotSNI string
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls backend sni=%s", r.TLS.ServerName)
	}))
	backend.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		gotSNI = h.ServerName
		return nil, nil
	}}
	backend.StartTLS()
	t.Cleanup(backend.Close)
	roots, otherRoots := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(ca.Leaf)
	otherRoots.AddCert(otherCA.Leaf)
	b := route.Backend{Namespace: "ns", Service: "tls", Port: 443}
	p, f := newProxy(t)
	for i, c := range []struct {
		name string
		u    route.UpstreamTLS
		want int
	}{
		{"server name", route.UpstreamTLS{ServerName: "abc.example.com", Roots: roots}, 200},
		{"server name mismatch", route.UpstreamTLS{ServerName: "mismatch.example.com", Roots: roots}, 502},
		{"other CA", route.UpstreamTLS{ServerName: "abc.example.com", Roots: otherRoots}, 502},
		{"DNS SAN", route.UpstreamTLS{ServerName: "other.example.com", Roots: roots, SANs: []string{"abc.example.com"}}, 200},
		{"DNS SAN mismatch", route.UpstreamTLS{ServerName: "abc.example.com", Roots: roots, SANs: []string{"def.example.com"}}, 502},
		{"URI SAN", route.UpstreamTLS{ServerName: "abc.example.com", Roots: roots, URIs: []string{"spiffe://abc.example.com/id"}}, 200},
		{"URI SAN mismatch", route.UpstreamTLS{ServerName: "abc.example.com", Roots: roots, URIs: []string{"spiffe://def.example.com/id"}}, 502},
		{"URI SAN, other CA", route.UpstreamTLS{ServerName: "abc.example.com", Roots: otherRoots, URIs: []string{"spiffe://abc.example.com/id"}}, 502},
		{"unusable policy", route.UpstreamTLS{ServerName: "abc.example.com", Roots: roots, Invalid: true}, 500},
	} {
		u := c.u
		u.Key = fmt.Sprint(i)
		tb := route.NewTable()
		tb.Host("gw.example.com").AddRule(route.Prefix, "/", &route.Rule{Source: "HTTPRoute ns/r",
			Backends: []route.WeightedBackend{{Backend: b, Weight: 1, TLS: &u}}})
		p.Swap(&Snapshot{Table: tb, Endpoints: map[route.Backend][]string{b: {strings.TrimPrefix(backend.URL, "https://")}}})
		gotSNI = ""
		code, body := get(t, f.URL+"/x", "gw.example.com")
		if code != c.want {
			t.Errorf("%s: %d %q, want %d", c.name, code, body, c.want)
		}
		if code == 200 && (body != "tls backend sni="+u.ServerName || gotSNI != u.ServerName) {
			t.Errorf("%s: %q, SNI %q: want the policy's server name %q", c.name, body, gotSNI, u.ServerName)
		}
	}
}

// TestBackendClientCertificate: a backend that asks for a client
// certificate gets the Gateway's, and refuses the proxy without one.
func TestBackendClientCertificate(t *testing.T) {
	ca := issue(t, "ca", nil)
	client := issue(t, "gateway", &ca)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Leaf)
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "client=%s", r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	backend.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert(t, &ca, []string{"abc.example.com"}, nil)},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	backend.StartTLS()
	t.Cleanup(backend.Close)
	b := route.Backend{Namespace: "ns", Service: "mtls", Port: 443}
	p, f := newProxy(t)
	for _, c := range []struct {
		cert *tls.Certificate
		want int
	}{{&client, 200}, {nil, 502}} {
		u := &route.UpstreamTLS{ServerName: "abc.example.com", Roots: pool, ClientCert: c.cert, Key: fmt.Sprint(c.cert != nil)}
		tb := route.NewTable()
		tb.Host("gw.example.com").AddRule(route.Prefix, "/", &route.Rule{Source: "HTTPRoute ns/r",
			Backends: []route.WeightedBackend{{Backend: b, Weight: 1, TLS: u}}})
		p.Swap(&Snapshot{Table: tb, Endpoints: map[route.Backend][]string{b: {strings.TrimPrefix(backend.URL, "https://")}}})
		code, body := get(t, f.URL+"/", "gw.example.com")
		if code != c.want || (code == 200 && body != "client=gateway") {
			t.Errorf("client certificate %v: %d %q, want %d", c.cert != nil, code, body, c.want)
		}
	}
}
