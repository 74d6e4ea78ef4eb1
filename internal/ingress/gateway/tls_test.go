package gateway

import (
	"crypto/tls"
	"net/http"
	"net/url"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// TestTLSRoutes: TLSRoutes on a passthrough listener and on one that
// terminates TLS; an HTTPRoute is not allowed on either.
func TestTLSRoutes(t *testing.T) {
	in := testInput()
	passthrough := listener("tls", 8443, gwv1.TLSProtocolType, "*.tls.example.com")
	passthrough.TLS = &gwv1.ListenerTLSConfig{Mode: ptr(gwv1.TLSModePassthrough)}
	terminate := listener("tls-terminate", 9443, gwv1.TLSProtocolType, "")
	terminate.TLS = &gwv1.ListenerTLSConfig{Mode: ptr(gwv1.TLSModeTerminate), CertificateRefs: []gwv1.SecretObjectReference{{Name: "cert"}}}
	in.Secret = func(ns, name string) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
	in.Gateways[0].Spec.Listeners = append(in.Gateways[0].Spec.Listeners, passthrough, terminate)
	in.ProxyPorts[types.NamespacedName{Namespace: "infra", Name: "gw"}][8443] = 20002
	in.ProxyPorts[types.NamespacedName{Namespace: "infra", Name: "gw"}][9443] = 20003
	in.TLSRoutes = []*gwv1.TLSRoute{{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "db", Generation: 1}, Spec: gwv1.TLSRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "gw", SectionName: ptr(gwv1.SectionName("tls"))}}},
		Hostnames:       []gwv1.Hostname{"db.tls.example.com"},
		Rules: []gwv1.TLSRouteRule{{BackendRefs: []gwv1.BackendRef{{BackendObjectReference: gwv1.BackendObjectReference{
			Name: "db", Port: ptr(gwv1.PortNumber(5432))}}}}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "plain", Generation: 1}, Spec: gwv1.TLSRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "gw", SectionName: ptr(gwv1.SectionName("tls-terminate"))}}},
			Hostnames:       []gwv1.Hostname{"plain.example.com"},
			Rules: []gwv1.TLSRouteRule{{BackendRefs: []gwv1.BackendRef{{BackendObjectReference: gwv1.BackendObjectReference{
				Name: "plain", Port: ptr(gwv1.PortNumber(3000))}}}}}}}}
	// An HTTPRoute naming the TLS listener is not allowed there.
	in.HTTPRoutes = append(in.HTTPRoutes, httpRoute("infra", "on-tls", 9, "infra/gw", nil, "", "web"))
	in.HTTPRoutes[len(in.HTTPRoutes)-1].Spec.ParentRefs[0].SectionName = ptr(gwv1.SectionName("tls"))
	res := Build(in)

	parents := res.Routes[RouteKey{"TLSRoute", types.NamespacedName{Namespace: "infra", Name: "db"}}]
	if len(parents) != 1 || condition(parents[0].Conditions, "Accepted") != "True/Accepted" {
		t.Fatalf("TLSRoute status: %+v", parents)
	}
	if got := condition(res.Routes[RouteKey{"HTTPRoute", types.NamespacedName{Namespace: "infra", Name: "on-tls"}}][0].Conditions, "Accepted"); got != "False/NotAllowedByListeners" {
		t.Errorf("HTTPRoute on a TLS listener: %s", got)
	}
	for _, ls := range res.Gateways[types.NamespacedName{Namespace: "infra", Name: "gw"}].Listeners {
		switch ls.Name {
		case "tls":
			if ls.AttachedRoutes != 1 || len(ls.SupportedKinds) != 1 || ls.SupportedKinds[0].Kind != "TLSRoute" {
				t.Errorf("passthrough listener: %+v", ls)
			}
		case "tls-terminate":
			if got := condition(ls.Conditions, "Accepted"); got != "True/Accepted" || ls.AttachedRoutes != 1 {
				t.Errorf("terminating TLS listener: %s, %d routes", got, ls.AttachedRoutes)
			}
		}
	}
	pt := res.Ports[20002]
	if pt == nil || !pt.Stream || pt.Terminate[0] {
		t.Fatalf("passthrough port: %+v", pt)
	}
	if tp := res.Ports[20003]; tp == nil || !tp.Stream || !tp.Terminate[0] || tp.Certs[""] == nil {
		t.Fatalf("terminating port: %+v", tp)
	}
	_, rule, ok := pt.Tables[0].MatchRequest(&http.Request{Host: "db.tls.example.com", URL: &url.URL{Path: "/"}})
	if !ok || rule.Backends[0].Backend.Service != "db" {
		t.Errorf("db.tls.example.com: %+v", rule)
	}
}
