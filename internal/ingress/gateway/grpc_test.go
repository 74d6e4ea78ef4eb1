package gateway

import (
	"net/http"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestGRPCRouteMatchesMethods(t *testing.T) {
	in := testInput()
	method := func(typ gwv1.GRPCMethodMatchType, svc, m string) gwv1.GRPCRouteMatch {
		mm := &gwv1.GRPCMethodMatch{Type: ptr(typ)}
		if svc != "" {
			mm.Service = ptr(svc)
		}
		if m != "" {
			mm.Method = ptr(m)
		}
		return gwv1.GRPCRouteMatch{Method: mm}
	}
	backend := func(name string) []gwv1.GRPCBackendRef {
		return []gwv1.GRPCBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name), Port: ptr(gwv1.PortNumber(9000))}}}}
	}
	in.GRPCRoutes = []*gwv1.GRPCRoute{{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "grpc"}, Spec: gwv1.GRPCRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "gw", SectionName: ptr(gwv1.SectionName("foo"))}}},
		Rules: []gwv1.GRPCRouteRule{
			{Matches: []gwv1.GRPCRouteMatch{method(gwv1.GRPCMethodMatchExact, "echo.Echo", "Call")}, BackendRefs: backend("exact")},
			{Matches: []gwv1.GRPCRouteMatch{method(gwv1.GRPCMethodMatchExact, "echo.Other", "")}, BackendRefs: backend("service")},
			{Matches: []gwv1.GRPCRouteMatch{method(gwv1.GRPCMethodMatchExact, "", "Ping")}, BackendRefs: backend("method")},
			{Matches: []gwv1.GRPCRouteMatch{method(gwv1.GRPCMethodMatchRegularExpression, `echo\.E.*`, "Str.*")}, BackendRefs: backend("regex")},
		}}}}
	res := Build(in)
	parents := res.Routes[RouteKey{"GRPCRoute", types.NamespacedName{Namespace: "infra", Name: "grpc"}}]
	if len(parents) != 1 || condition(parents[0].Conditions, "Accepted") != "True/Accepted" {
		t.Fatalf("GRPCRoute status: %+v", parents)
	}
	pt := res.Ports[20000]
	for path, want := range map[string]string{
		"/echo.Echo/Call": "exact", "/echo.Other/Any": "service", "/x.Y/Ping": "method", "/echo.Echo/Stream": "regex",
		// The listener's HTTPRoute infra/foo takes the rest.
		"/echo.Echo/Nope": "web", "/echo.EchoX/Call": "web", "/x.Y/Ping/extra": "web",
	} {
		r, _ := http.NewRequest("POST", "http://foo.example.com"+path, nil)
		got := ""
		if _, rule, ok := pt.Tables[1].MatchRequest(r); ok {
			got = rule.Backends[0].Backend.Service
			if !rule.H2C && got != "web" {
				t.Errorf("%s: a gRPC backend not reached over h2c", path)
			}
		}
		if got != want {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
}
