package gateway

import (
	"crypto/x509"
	"encoding/pem"
	"errors"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// frontendValidation is the Gateway's client-certificate validation for a
// listener port: its perPort entry, else its default (nil: none).
func frontendValidation(g *gwv1.Gateway, port gwv1.PortNumber) *gwv1.FrontendTLSValidation {
	t := g.Spec.TLS
	if t == nil || t.Frontend == nil {
		return nil
	}
	for _, pp := range t.Frontend.PerPort {
		if pp.Port == port {
			return pp.TLS.Validation
		}
	}
	return t.Frontend.Default.Validation
}

// loadClientCAs resolves the CA certificates an HTTPS listener checks
// clients against. A reference that does not resolve makes ResolvedRefs
// false with its reason; with none usable the listener is not accepted
// (NoValidCACertificate): serving it without the check would let in
// every client the Gateway's owner meant to keep out.
func (l *listenerState) loadClientCAs(g *gwv1.Gateway, in Input) {
	v := frontendValidation(g, l.spec.Port)
	if v == nil {
		return
	}
	pool := x509.NewCertPool()
	usable := 0
	for _, ref := range v.CACertificateRefs {
		ns := g.Namespace
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		var err error
		switch {
		case ref.Group != "" || ref.Kind != "ConfigMap":
			l.refReason, l.refMessage = string(gwv1.ListenerReasonInvalidCACertificateKind), errorf("caCertificateRef %s %s: only ConfigMaps are supported", ref.Kind, ref.Name)
			continue
		case ns != g.Namespace && !granted(in.Grants, groupName, "Gateway", g.Namespace, "", "ConfigMap", ns, string(ref.Name)):
			l.refReason, l.refMessage = string(gwv1.ListenerReasonRefNotPermitted), errorf("no ReferenceGrant in %s allows this Gateway's ConfigMap %s", ns, ref.Name)
			continue
		case in.CACerts == nil:
			err = errors.New("no ConfigMaps are read")
		default:
			var certs []*x509.Certificate
			if certs, err = in.CACerts(ns, string(ref.Name)); err == nil {
				for _, c := range certs {
					pool.AddCert(c)
				}
				usable++
				continue
			}
		}
		l.refReason, l.refMessage = string(gwv1.ListenerReasonInvalidCACertificateRef), errorf("ConfigMap %s/%s: %v", ns, ref.Name, err)
	}
	if l.refReason != "" {
		l.resolved = false
	}
	if usable == 0 {
		l.accepted, l.reason, l.message = false, string(gwv1.ListenerReasonNoValidCACertificate), "no CA certificate to validate clients against"
		return
	}
	l.clientCAs = pool
	l.clientCertOptional = v.Mode == gwv1.AllowInsecureFallback
}

// insecureFallback: some port of the Gateway lets clients in without a
// valid certificate, which its status must say.
func insecureFallback(g *gwv1.Gateway) bool {
	t := g.Spec.TLS
	if t == nil || t.Frontend == nil {
		return false
	}
	if v := t.Frontend.Default.Validation; v != nil && v.Mode == gwv1.AllowInsecureFallback {
		return true
	}
	for _, pp := range t.Frontend.PerPort {
		if v := pp.TLS.Validation; v != nil && v.Mode == gwv1.AllowInsecureFallback {
			return true
		}
	}
	return false
}

// parseCerts reads the PEM certificates of a CA bundle; one that holds
// none is an error.
func parseCerts(bundle []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for len(bundle) > 0 {
		var b *pem.Block
		if b, bundle = pem.Decode(bundle); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("ca.crt holds no PEM certificate")
	}
	return out, nil
}
