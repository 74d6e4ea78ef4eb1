package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func testCA(t *testing.T) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFrontendValidation: each HTTPS listener takes its port's client
// validation (perPort, else default); a CA reference that does not
// resolve fails that listener alone with the API's reasons; insecure
// fallback shows on the Gateway.
func TestFrontendValidation(t *testing.T) {
	in := testInput()
	ca := testCA(t)
	in.Secret = func(ns, name string) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
	in.CACerts = func(ns, name string) ([]*x509.Certificate, error) {
		if name == "ca" {
			return []*x509.Certificate{ca}, nil
		}
		return nil, errors.New("not found")
	}
	gw := in.Gateways[0]
	https := func(name string, port int32) gwv1.Listener {
		l := listener(name, port, gwv1.HTTPSProtocolType, name+".example.com")
		l.TLS = &gwv1.ListenerTLSConfig{CertificateRefs: []gwv1.SecretObjectReference{{Name: "cert"}}}
		return l
	}
	gw.Spec.Listeners = []gwv1.Listener{listener("plain", 80, gwv1.HTTPProtocolType, ""), https("default", 443),
		https("missing", 7443), https("kind", 8443), https("grant", 6443), https("fallback", 5443)}
	validation := func(kind, ns, name string, mode gwv1.FrontendValidationModeType) gwv1.TLSConfig {
		ref := gwv1.ObjectReference{Kind: gwv1.Kind(kind), Name: gwv1.ObjectName(name)}
		if ns != "" {
			ref.Namespace = ptr(gwv1.Namespace(ns))
		}
		return gwv1.TLSConfig{Validation: &gwv1.FrontendTLSValidation{CACertificateRefs: []gwv1.ObjectReference{ref}, Mode: mode}}
	}
	gw.Spec.TLS = &gwv1.GatewayTLSConfig{Frontend: &gwv1.FrontendTLSConfig{
		Default: validation("ConfigMap", "", "ca", ""),
		PerPort: []gwv1.TLSPortConfig{
			{Port: 7443, TLS: validation("ConfigMap", "", "gone", "")},
			{Port: 8443, TLS: validation("Service", "", "ca", "")},
			{Port: 6443, TLS: validation("ConfigMap", "elsewhere", "ca", "")},
			{Port: 5443, TLS: validation("ConfigMap", "", "ca", gwv1.AllowInsecureFallback)},
		}}}
	key := types.NamespacedName{Namespace: "infra", Name: "gw"}
	in.ProxyPorts[key] = map[int32]int{80: 20000, 443: 20001, 7443: 20002, 8443: 20003, 6443: 20004, 5443: 20005}
	res := Build(in)
	st := res.Gateways[key]
	want := map[string][2]string{
		"plain":    {"True/Accepted", "True/ResolvedRefs"},
		"default":  {"True/Accepted", "True/ResolvedRefs"},
		"missing":  {"False/NoValidCACertificate", "False/InvalidCACertificateRef"},
		"kind":     {"False/NoValidCACertificate", "False/InvalidCACertificateKind"},
		"grant":    {"False/NoValidCACertificate", "False/RefNotPermitted"},
		"fallback": {"True/Accepted", "True/ResolvedRefs"},
	}
	for _, ls := range st.Listeners {
		got := [2]string{condition(ls.Conditions, "Accepted"), condition(ls.Conditions, "ResolvedRefs")}
		if got != want[string(ls.Name)] {
			t.Errorf("listener %s: %v, want %v", ls.Name, got, want[string(ls.Name)])
		}
	}
	if got := condition(st.Conditions, "InsecureFrontendValidationMode"); got != "True/ConfigurationChanged" {
		t.Errorf("InsecureFrontendValidationMode: %s", got)
	}
	if pt := res.Ports[20000]; pt == nil || pt.ClientCAs != nil {
		t.Errorf("plain HTTP port: %+v", pt)
	}
	if pt := res.Ports[20001]; pt == nil || pt.ClientCAs == nil || pt.ClientCertOptional {
		t.Errorf("default HTTPS port: %+v", pt)
	}
	for _, p := range []int{20002, 20003, 20004} {
		if res.Ports[p] != nil {
			t.Errorf("port %d is served though its listener validates against nothing", p)
		}
	}
	if pt := res.Ports[20005]; pt == nil || pt.ClientCAs == nil || !pt.ClientCertOptional {
		t.Errorf("fallback port: %+v", pt)
	}
}
