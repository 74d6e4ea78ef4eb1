package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"weft.dev/weft/internal/ingress/route"
)

// maxTLSTransports bounds the transports kept for BackendTLSPolicies; past
// it the cache starts over (old configurations' pools are dropped).
const maxTLSTransports = 1024

// tlsTransports keeps one transport (and so one connection pool) per
// backend TLS configuration.
type tlsTransports struct {
	mu sync.Mutex
	m  map[string]*http.Transport
}

// transportFor is the transport that reaches backends over TLS checked
// as u says.
func (p *Proxy) transportFor(u *route.UpstreamTLS) *http.Transport {
	p.upTLS.mu.Lock()
	defer p.upTLS.mu.Unlock()
	if t := p.upTLS.m[u.Key]; t != nil {
		return t
	}
	if p.upTLS.m == nil || len(p.upTLS.m) >= maxTLSTransports {
		for _, t := range p.upTLS.m {
			t.CloseIdleConnections()
		}
		p.upTLS.m = map[string]*http.Transport{}
	}
	t := &http.Transport{Proxy: nil, DialContext: p.dial, MaxIdleConns: 1024, MaxIdleConnsPerHost: 64,
		IdleConnTimeout: 90 * time.Second, ExpectContinueTimeout: time.Second, TLSHandshakeTimeout: p.cfg.DialTimeout,
		TLSClientConfig: upstreamTLSConfig(u), ForceAttemptHTTP2: true}
	p.upTLS.m[u.Key] = t
	return t
}

// upstreamTLSConfig checks the backend's certificate against u's roots
// and names: the server name, or any of the subject alternative names
// when u lists them (then the server name is only sent as SNI).
func upstreamTLSConfig(u *route.UpstreamTLS) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.ServerName, RootCAs: u.Roots}
	if u.ClientCert != nil {
		c.Certificates = []tls.Certificate{*u.ClientCert}
	}
	if len(u.SANs) == 0 && len(u.URIs) == 0 {
		return c
	}
	// The chain is still verified, below, against the roots; only the
	// name check changes.
	c.InsecureSkipVerify = true
	c.VerifyConnection = func(cs tls.ConnectionState) error { return verifySANs(cs, u) }
	return c
}

func verifySANs(cs tls.ConnectionState, u *route.UpstreamTLS) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("backend showed no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: u.Roots, Intermediates: inter}); err != nil {
		return err
	}
	for _, name := range u.SANs {
		if leaf.VerifyHostname(name) == nil {
			return nil
		}
	}
	for _, uri := range leaf.URIs {
		if slices.Contains(u.URIs, uri.String()) {
			return nil
		}
	}
	return fmt.Errorf("backend certificate names none of %v %v", u.SANs, u.URIs)
}
