package togateway

import (
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func ingress(ns, name, host, path string, ann map[string]string, backend string, port int32) *networkingv1.Ingress {
	prefix := networkingv1.PathTypePrefix
	return &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann}, Spec: networkingv1.IngressSpec{
		Rules: []networkingv1.IngressRule{{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
			Paths: []networkingv1.HTTPIngressPath{{Path: path, PathType: &prefix, Backend: networkingv1.IngressBackend{
				Service: &networkingv1.IngressServiceBackend{Name: backend, Port: networkingv1.ServiceBackendPort{Number: port}}}}}}}}}}}
}

const p = "nginx.ingress.kubernetes.io/"

func TestConvert(t *testing.T) {
	secure := ingress("apps", "secure", "a.example.com", "/", map[string]string{p + "ssl-redirect": "true", p + "upstream-vhost": "internal.example.com"}, "web", 80)
	secure.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"a.example.com"}, SecretName: "a-tls"}}
	rewrite := ingress("apps", "rewrite", "b.example.com", "/api(/|$)(.*)", map[string]string{p + "rewrite-target": "/$2", p + "whitelist-source-range": "10.0.0.0/8"}, "api", 8080)
	canary := ingress("apps", "canary", "b.example.com", "/api(/|$)(.*)", map[string]string{p + "canary": "true", p + "canary-weight": "20"}, "api-v2", 8080)
	regex := ingress("apps", "regex", "c.example.com", "/x/[0-9]+", map[string]string{p + "use-regex": "true"}, "web", 80)
	res := Convert([]*networkingv1.Ingress{secure, rewrite, canary, regex}, Options{Namespace: "gw", Name: "weft", Class: "weft"})

	if n := len(res.Gateway.Spec.Listeners); n != 2 || res.Gateway.Spec.Listeners[1].Hostname == nil || *res.Gateway.Spec.Listeners[1].Hostname != "a.example.com" {
		t.Fatalf("listeners: %+v", res.Gateway.Spec.Listeners)
	}
	if ref := res.Gateway.Spec.Listeners[1].TLS.CertificateRefs[0]; ref.Name != "a-tls" || ref.Namespace == nil || *ref.Namespace != "apps" {
		t.Errorf("certificate ref: %+v", ref)
	}
	if len(res.Grants) != 1 || res.Grants[0].Namespace != "apps" || res.Grants[0].Spec.From[0].Namespace != "gw" {
		t.Errorf("grants: %+v", res.Grants)
	}
	routes := map[string]*gwv1.HTTPRoute{}
	for _, r := range res.Routes {
		routes[r.Name] = r
	}
	if r := routes["secure-https-redirect"]; r == nil || *r.Spec.Rules[0].Filters[0].RequestRedirect.Scheme != "https" || *r.Spec.ParentRefs[0].SectionName != "http" {
		t.Errorf("ssl-redirect: %+v", r)
	}
	if r := routes["secure"]; r == nil || len(r.Spec.ParentRefs) != 1 || *r.Spec.ParentRefs[0].SectionName != "https-a-example-com" ||
		r.Spec.Rules[0].Filters[0].URLRewrite == nil || *r.Spec.Rules[0].Filters[0].URLRewrite.Hostname != "internal.example.com" {
		t.Errorf("secure route: %+v", r)
	}
	rw := routes["rewrite"]
	if rw == nil || len(rw.Spec.Rules) != 1 {
		t.Fatalf("rewrite route: %+v", rw)
	}
	rule := rw.Spec.Rules[0]
	if *rule.Matches[0].Path.Value != "/api" || *rule.Filters[0].URLRewrite.Path.ReplacePrefixMatch != "/" {
		t.Errorf("regex prefix rewrite: %+v", rule)
	}
	if len(rule.BackendRefs) != 2 || *rule.BackendRefs[0].Weight != 80 || rule.BackendRefs[1].Name != "api-v2" || *rule.BackendRefs[1].Weight != 20 {
		t.Errorf("canary weight: %+v", rule.BackendRefs)
	}
	if _, ok := routes["canary"]; ok {
		t.Error("the canary Ingress got a route of its own")
	}
	notes := strings.Join(res.NotExpressed, "\n")
	for _, want := range []string{"apps/rewrite: whitelist-source-range", `apps/regex: path /x/[0-9]+: a regular expression`} {
		if !strings.Contains(notes, want) {
			t.Errorf("not expressed %q missing from:\n%s", want, notes)
		}
	}
}
