package gateway

import (
	"crypto/tls"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weft.dev/weft/internal/ingress/route"
)

func listener(name string, port int32, proto gwv1.ProtocolType, host string) gwv1.Listener {
	l := gwv1.Listener{Name: gwv1.SectionName(name), Port: port, Protocol: proto}
	if host != "" {
		l.Hostname = ptr(gwv1.Hostname(host))
	}
	return l
}

func httpRoute(ns, name string, age int, parent string, hosts []string, backendNS, backend string) *gwv1.HTTPRoute {
	r := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 3,
		CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+age), 0))}}
	gwNS, gwName, _ := strings.Cut(parent, "/")
	r.Spec.ParentRefs = []gwv1.ParentReference{{Namespace: ptr(gwv1.Namespace(gwNS)), Name: gwv1.ObjectName(gwName)}}
	for _, h := range hosts {
		r.Spec.Hostnames = append(r.Spec.Hostnames, gwv1.Hostname(h))
	}
	ref := gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
		Name: gwv1.ObjectName(backend), Port: ptr(gwv1.PortNumber(8080))}}}
	if backendNS != "" {
		ref.Namespace = ptr(gwv1.Namespace(backendNS))
	}
	r.Spec.Rules = []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{ref}}}
	return r
}

func condition(conds []metav1.Condition, typ string) string {
	for _, c := range conds {
		if c.Type == typ {
			return string(c.Status) + "/" + c.Reason
		}
	}
	return "missing"
}

func testInput() Input {
	gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "gw", Generation: 2},
		Spec: gwv1.GatewaySpec{GatewayClassName: "weft", Listeners: []gwv1.Listener{
			listener("wild", 80, gwv1.HTTPProtocolType, "*.example.com"),
			listener("foo", 80, gwv1.HTTPProtocolType, "foo.example.com"),
			listener("secure", 443, gwv1.HTTPSProtocolType, "secure.example.com"),
			listener("udp", 53, gwv1.UDPProtocolType, ""),
		}}}
	gw.Spec.Listeners[0].AllowedRoutes = &gwv1.AllowedRoutes{Namespaces: &gwv1.RouteNamespaces{From: ptr(gwv1.NamespacesFromAll)}}
	gw.Spec.Listeners[2].TLS = &gwv1.ListenerTLSConfig{CertificateRefs: []gwv1.SecretObjectReference{{Name: "missing"}}}
	other := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "not-ours"}, Spec: gwv1.GatewaySpec{GatewayClassName: "other",
		Listeners: []gwv1.Listener{listener("http", 80, gwv1.HTTPProtocolType, "")}}}
	return Input{
		Classes: []*gwv1.GatewayClass{
			{ObjectMeta: metav1.ObjectMeta{Name: "weft", Generation: 1}, Spec: gwv1.GatewayClassSpec{ControllerName: ControllerName}},
			{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: gwv1.GatewayClassSpec{ControllerName: "example.com/other"}},
		},
		Gateways: []*gwv1.Gateway{gw, other},
		HTTPRoutes: []*gwv1.HTTPRoute{
			httpRoute("apps", "wild", 1, "infra/gw", nil, "", "web"),
			httpRoute("apps", "nohost", 2, "infra/gw", []string{"bar.other.test"}, "", "web"),
			httpRoute("apps", "crossns", 3, "infra/gw", []string{"x.example.com"}, "backends", "api"),
			httpRoute("apps", "missing", 4, "infra/gw", []string{"y.example.com"}, "", "gone"),
			httpRoute("infra", "foo", 5, "infra/gw", []string{"foo.example.com"}, "", "web"),
			httpRoute("apps", "elsewhere", 6, "infra/not-ours", nil, "", "web"),
		},
		NamespaceLabels: map[string]map[string]string{},
		ServiceExists:   func(ns, name string) bool { return name != "gone" },
		Secret:          func(ns, name string) (*tls.Certificate, error) { return nil, errors.New("not found") },
		ProxyPorts:      map[types.NamespacedName]map[int32]int{{Namespace: "infra", Name: "gw"}: {80: 20000, 443: 20001}},
		Addresses:       map[types.NamespacedName][]string{{Namespace: "infra", Name: "gw"}: {"198.18.200.1"}},
	}
}

func TestBuildStatus(t *testing.T) {
	res := Build(testInput())
	if got := condition(res.Classes["weft"], "Accepted"); got != "True/Accepted" {
		t.Errorf("GatewayClass weft: %s", got)
	}
	if _, ok := res.Classes["other"]; ok {
		t.Error("status for another controller's class")
	}
	st := res.Gateways[types.NamespacedName{Namespace: "infra", Name: "gw"}]
	if st == nil {
		t.Fatal("no Gateway status")
	}
	if got := condition(st.Conditions, "Accepted"); got != "True/ListenersNotValid" {
		t.Errorf("Gateway Accepted: %s", got)
	}
	if got := condition(st.Conditions, "Programmed"); got != "True/Programmed" {
		t.Errorf("Gateway Programmed: %s", got)
	}
	if len(st.Addresses) != 1 || st.Addresses[0].Value != "198.18.200.1" {
		t.Errorf("addresses: %+v", st.Addresses)
	}
	want := map[string]struct {
		accepted, resolved, programmed string
		attached                       int32
	}{
		"wild":   {"True/Accepted", "True/ResolvedRefs", "True/Programmed", 4}, // infra/foo attaches to both
		"foo":    {"True/Accepted", "True/ResolvedRefs", "True/Programmed", 1},
		"secure": {"True/Accepted", "False/InvalidCertificateRef", "False/Invalid", 0},
		"udp":    {"False/UnsupportedProtocol", "True/ResolvedRefs", "False/Invalid", 0},
	}
	for _, ls := range st.Listeners {
		w := want[string(ls.Name)]
		got := [3]string{condition(ls.Conditions, "Accepted"), condition(ls.Conditions, "ResolvedRefs"), condition(ls.Conditions, "Programmed")}
		if got != [3]string{w.accepted, w.resolved, w.programmed} || ls.AttachedRoutes != w.attached {
			t.Errorf("listener %s: %v attached %d, want %+v", ls.Name, got, ls.AttachedRoutes, w)
		}
	}
	routes := map[string][2]string{
		"apps/wild":    {"True/Accepted", "True/ResolvedRefs"},
		"apps/nohost":  {"False/NoMatchingListenerHostname", "True/ResolvedRefs"},
		"apps/crossns": {"True/Accepted", "False/RefNotPermitted"},
		"apps/missing": {"True/Accepted", "False/BackendNotFound"},
		"infra/foo":    {"True/Accepted", "True/ResolvedRefs"},
	}
	for name, w := range routes {
		ns, n, _ := strings.Cut(name, "/")
		parents := res.Routes[RouteKey{"HTTPRoute", types.NamespacedName{Namespace: ns, Name: n}}]
		if len(parents) != 1 {
			t.Errorf("%s: %d parents", name, len(parents))
			continue
		}
		got := [2]string{condition(parents[0].Conditions, "Accepted"), condition(parents[0].Conditions, "ResolvedRefs")}
		if got != w || parents[0].ControllerName != ControllerName || parents[0].Conditions[0].ObservedGeneration != 3 {
			t.Errorf("%s: %v, want %v", name, got, w)
		}
	}
	if _, ok := res.Routes[RouteKey{"HTTPRoute", types.NamespacedName{Namespace: "apps", Name: "elsewhere"}}]; ok {
		t.Error("status for a route of another controller's Gateway")
	}
}

func TestBuildRoutesRequests(t *testing.T) {
	in := testInput()
	in.Grants = []*gwv1.ReferenceGrant{{ObjectMeta: metav1.ObjectMeta{Namespace: "backends", Name: "g"}, Spec: gwv1.ReferenceGrantSpec{
		From: []gwv1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "HTTPRoute", Namespace: "apps"}},
		To:   []gwv1.ReferenceGrantTo{{Kind: "Service"}}}}}
	res := Build(in)
	pt := res.Ports[20000]
	if pt == nil || len(res.Ports) != 1 {
		t.Fatalf("ports: %+v", res.Ports)
	}
	cases := []struct{ host, want string }{
		{"a.example.com", "HTTPRoute apps/wild"},
		{"x.example.com", "HTTPRoute apps/crossns"},
		{"foo.example.com", "HTTPRoute infra/foo"},
		{"bar.other.test", ""},
	}
	for _, c := range cases {
		got := ""
		if i := route.MostSpecific(c.host, pt.Hostnames); i >= 0 {
			r, _ := http.NewRequest("GET", "http://"+c.host+"/", nil)
			if _, rule, ok := pt.Tables[i].MatchRequest(r); ok {
				got = rule.Source
				if c.host == "x.example.com" && (rule.Backends[0].Invalid || rule.Backends[0].Backend.Namespace != "backends") {
					t.Errorf("granted cross-namespace backend: %+v", rule.Backends[0])
				}
			}
		}
		if got != c.want {
			t.Errorf("%s: %q, want %q", c.host, got, c.want)
		}
	}
	crossns := res.Routes[RouteKey{"HTTPRoute", types.NamespacedName{Namespace: "apps", Name: "crossns"}}]
	if got := condition(crossns[0].Conditions, "ResolvedRefs"); got != "True/ResolvedRefs" {
		t.Errorf("crossns with a ReferenceGrant: %s", got)
	}
}

func TestCompareNamespacedNames(t *testing.T) {
	pairs := [][4]string{{"a", "x", "a-b", "x"}, {"a", "x", "a", "y"}, {"ab", "c", "a", "bc"}, {"a", "b", "a", "b"}, {"ns", "n", "ns", "n-1"}, {"a", "", "a", "b"}}
	for _, p := range pairs {
		want := strings.Compare(p[0]+"/"+p[1], p[2]+"/"+p[3])
		got := compareNamespacedNames(p[0], p[1], p[2], p[3])
		if (got < 0) != (want < 0) || (got == 0) != (want == 0) {
			t.Errorf("%v: %d, want the sign of %d", p, got, want)
		}
		if back := compareNamespacedNames(p[2], p[3], p[0], p[1]); (back < 0) != (want > 0) {
			t.Errorf("%v reversed: %d", p, back)
		}
	}
}

// TestMemoCompilesOnlyWhatChanged: with a memo, a Build after another
// compiles only new or edited routes while the world stands, and every
// route again once it moves.
func TestMemoCompilesOnlyWhatChanged(t *testing.T) {
	in := testInput()
	lookups := 0
	gone := map[string]bool{"gone": true}
	in.ServiceExists = func(ns, name string) bool { lookups++; return !gone[name] }
	in.Memo, in.World = &Memo{}, 1
	first := Build(in)
	if lookups == 0 {
		t.Fatal("the first Build looked up no Service")
	}
	lookups = 0
	again := Build(in)
	if lookups != 0 {
		t.Errorf("an unchanged world and routes: %d Service lookups, want 0", lookups)
	}
	if in.Memo.Misses != 0 || in.Memo.Hits == 0 {
		t.Errorf("an unchanged world and routes: %d compiled, %d reused; want none compiled", in.Memo.Misses, in.Memo.Hits)
	}
	if !reflect.DeepEqual(first.Routes, again.Routes) || !reflect.DeepEqual(first.Gateways, again.Gateways) {
		t.Error("statuses differ between the Builds")
	}
	edited := in.HTTPRoutes[2].DeepCopy() // apps/crossns
	in.HTTPRoutes[2] = edited
	lookups = 0
	Build(in)
	if lookups != 0 { // crossns is refused before any lookup: no grant
		t.Errorf("an edited route refused by its grant: %d lookups", lookups)
	}
	in.HTTPRoutes[0] = in.HTTPRoutes[0].DeepCopy() // apps/wild, to web
	lookups = 0
	Build(in)
	if lookups != 1 {
		t.Errorf("one edited route: %d Service lookups, want 1", lookups)
	}
	if in.Memo.Misses != 1 {
		t.Errorf("one edited route: %d routes compiled, want 1", in.Memo.Misses)
	}
	gone["web"] = true
	in.World++
	res := Build(in)
	st := res.Routes[RouteKey{"HTTPRoute", types.NamespacedName{Namespace: "infra", Name: "foo"}}]
	if got := condition(st[0].Conditions, "ResolvedRefs"); got != "False/BackendNotFound" {
		t.Errorf("after the Service went and the world moved: %s", got)
	}
}
