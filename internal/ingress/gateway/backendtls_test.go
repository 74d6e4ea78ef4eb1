package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func backendTLSPolicy(name string, age int, svc, section, cm string) *gwv1.BackendTLSPolicy {
	p := &gwv1.BackendTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: name, Generation: 4,
		CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+age), 0))}}
	ref := gwv1.LocalPolicyTargetReferenceWithSectionName{LocalPolicyTargetReference: gwv1.LocalPolicyTargetReference{Kind: "Service", Name: gwv1.ObjectName(svc)}}
	if section != "" {
		ref.SectionName = ptr(gwv1.SectionName(section))
	}
	p.Spec.TargetRefs = []gwv1.LocalPolicyTargetReferenceWithSectionName{ref}
	p.Spec.Validation = gwv1.BackendTLSPolicyValidation{Hostname: "backend.example.com",
		CACertificateRefs: []gwv1.LocalObjectReference{{Kind: "ConfigMap", Name: gwv1.ObjectName(cm)}}}
	return p
}

// TestBackendTLSPolicies: a policy gives the backends of the Service port
// it targets TLS with its server name and CAs (a port's own policy
// before the whole Service's); the older of two policies on one port
// wins and the other is Conflicted; a policy whose CAs do not resolve
// marks its backends unusable; each policy's status names the Gateways
// whose routes send to its Services.
func TestBackendTLSPolicies(t *testing.T) {
	in := testInput()
	ca := testCA(t)
	in.CACerts = func(ns, name string) ([]*x509.Certificate, error) {
		if name == "ca" {
			return []*x509.Certificate{ca}, nil
		}
		return nil, errors.New("not found")
	}
	in.ServicePortName = func(ns, name string, port int32) string { return "https" }
	in.HTTPRoutes = append(in.HTTPRoutes,
		httpRoute("apps", "to-secure", 7, "infra/gw", []string{"secure.example.com"}, "", "secure"),
		httpRoute("apps", "to-broken", 8, "infra/gw", []string{"broken.example.com"}, "", "broken"),
		httpRoute("apps", "to-whole", 9, "infra/gw", []string{"whole.example.com"}, "", "whole"))
	badKind := backendTLSPolicy("bad-kind", 5, "other", "", "ca")
	badKind.Spec.Validation.CACertificateRefs[0].Kind = "Secret"
	in.BackendTLSPolicies = []*gwv1.BackendTLSPolicy{
		backendTLSPolicy("newer", 2, "secure", "https", "ca"),
		backendTLSPolicy("older", 1, "secure", "https", "ca"),
		backendTLSPolicy("missing-ca", 3, "broken", "", "gone"),
		backendTLSPolicy("whole", 4, "whole", "", "ca"),
		badKind,
	}
	res := Build(in)
	tb := res.Ports[20000].Tables[0] // the wildcard listener's
	for host, want := range map[string]string{"secure.example.com": "ok", "broken.example.com": "invalid", "whole.example.com": "ok", "x.example.com": "none"} {
		_, rule, ok := tb.MatchRequest(&http.Request{Host: host, URL: &url.URL{Path: "/"}})
		if !ok {
			t.Fatalf("%s: no route", host)
		}
		u := rule.Backends[0].TLS
		got := "none"
		switch {
		case u != nil && u.Invalid:
			got = "invalid"
		case u != nil && u.ServerName == "backend.example.com" && u.Roots != nil:
			got = "ok"
		}
		if got != want {
			t.Errorf("%s: backend TLS %s, want %s", host, got, want)
		}
	}
	gw := types.NamespacedName{Namespace: "infra", Name: "gw"}
	for name, want := range map[string][2]string{
		"older":      {"True/Accepted", "True/ResolvedRefs"},
		"newer":      {"False/Conflicted", "True/ResolvedRefs"},
		"missing-ca": {"False/NoValidCACertificate", "False/InvalidCACertificateRef"},
		"whole":      {"True/Accepted", "True/ResolvedRefs"},
	} {
		st := res.Policies[types.NamespacedName{Namespace: "apps", Name: name}]
		if len(st) != 1 || st[0].AncestorRef.Name != gwv1.ObjectName(gw.Name) || string(*st[0].AncestorRef.Namespace) != gw.Namespace {
			t.Errorf("%s: ancestors %+v, want the Gateway", name, st)
			continue
		}
		got := [2]string{condition(st[0].Conditions, "Accepted"), condition(st[0].Conditions, "ResolvedRefs")}
		if got != want || st[0].Conditions[0].ObservedGeneration != 4 {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
	// No route sends to bad-kind's Service: no ancestor to report under.
	if st := res.Policies[types.NamespacedName{Namespace: "apps", Name: "bad-kind"}]; len(st) != 0 {
		t.Errorf("bad-kind: %+v", st)
	}
	if reason, _ := caProblem(badKind, in); reason != string(gwv1.BackendTLSPolicyReasonInvalidKind) {
		t.Errorf("bad-kind: %s", reason)
	}
}

// TestGatewayBackendClientCertificate: the TLS backends of a Gateway's
// routes get its client certificate (in a transport of their own); a
// reference that does not resolve is the Gateway's ResolvedRefs.
func TestGatewayBackendClientCertificate(t *testing.T) {
	in := testInput()
	ca := testCA(t)
	in.CACerts = func(ns, name string) ([]*x509.Certificate, error) { return []*x509.Certificate{ca}, nil }
	in.ServicePortName = func(ns, name string, port int32) string { return "https" }
	in.Secret = func(ns, name string) (*tls.Certificate, error) {
		if name == "client" {
			return &tls.Certificate{Certificate: [][]byte{{1, 2, 3}}}, nil
		}
		return nil, errors.New("not found")
	}
	in.HTTPRoutes = []*gwv1.HTTPRoute{httpRoute("apps", "to-secure", 7, "infra/gw", []string{"secure.example.com"}, "", "secure")}
	in.BackendTLSPolicies = []*gwv1.BackendTLSPolicy{backendTLSPolicy("p", 1, "secure", "", "ca")}
	gw := in.Gateways[0]
	gw.Spec.TLS = &gwv1.GatewayTLSConfig{Backend: &gwv1.GatewayBackendTLS{ClientCertificateRef: &gwv1.SecretObjectReference{Name: "client"}}}
	res := Build(in)
	key := types.NamespacedName{Namespace: "infra", Name: "gw"}
	if got := condition(res.Gateways[key].Conditions, "ResolvedRefs"); got != "True/ResolvedRefs" {
		t.Errorf("Gateway ResolvedRefs: %s", got)
	}
	_, rule, ok := res.Ports[20000].Tables[0].MatchRequest(&http.Request{Host: "secure.example.com", URL: &url.URL{Path: "/"}})
	if !ok {
		t.Fatal("no route")
	}
	u := rule.Backends[0].TLS
	if u == nil || u.ClientCert == nil || u.Key == compileBackendPolicies(in).forBackend("apps", "secure", "https").Key {
		t.Errorf("backend TLS %+v: want the Gateway's client certificate, in a transport of its own", u)
	}
	gw.Spec.TLS.Backend.ClientCertificateRef.Name = "gone"
	res = Build(in)
	if got := condition(res.Gateways[key].Conditions, "ResolvedRefs"); got != "False/InvalidClientCertificateRef" {
		t.Errorf("Gateway ResolvedRefs with a missing Secret: %s", got)
	}
}
