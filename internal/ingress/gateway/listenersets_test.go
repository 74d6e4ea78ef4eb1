package gateway

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func listenerSet(ns, name string, age int, gw string, listeners ...gwv1.Listener) *gwv1.ListenerSet {
	ls := &gwv1.ListenerSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 2,
		CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+age), 0))}}
	ls.Spec.ParentRef = gwv1.ParentGatewayReference{Name: gwv1.ObjectName(gw), Namespace: ptr(gwv1.Namespace("infra"))}
	for _, l := range listeners {
		ls.Spec.Listeners = append(ls.Spec.Listeners, gwv1.ListenerEntry{Name: l.Name, Hostname: l.Hostname, Port: l.Port, Protocol: l.Protocol, TLS: l.TLS})
	}
	return ls
}

// TestListenerSets: a Gateway takes the ListenerSets its allowedListeners
// allows; their listeners join its ports, lose to its own listeners and
// older sets' on conflict, and take routes that name the set; a set not
// allowed serves nothing.
func TestListenerSets(t *testing.T) {
	in := testInput()
	gw := in.Gateways[0]
	gw.Spec.AllowedListeners = &gwv1.AllowedListeners{Namespaces: &gwv1.ListenerNamespaces{From: ptr(gwv1.NamespacesFromSame)}}
	in.ProxyPorts[types.NamespacedName{Namespace: "infra", Name: "gw"}][8080] = 20005
	secure := listener("s", 8443, gwv1.HTTPSProtocolType, "s.example.org")
	secure.TLS = &gwv1.ListenerTLSConfig{CertificateRefs: []gwv1.SecretObjectReference{{Name: "missing"}}}
	in.ListenerSets = []*gwv1.ListenerSet{
		listenerSet("infra", "team-a", 1, "gw",
			listener("a", 8080, gwv1.HTTPProtocolType, "a.example.org"),
			listener("same-as-gateway", 80, gwv1.HTTPProtocolType, "foo.example.com")),
		listenerSet("infra", "team-b", 2, "gw", listener("b", 8080, gwv1.HTTPProtocolType, "a.example.org")),
		listenerSet("apps", "elsewhere", 0, "gw", listener("c", 8080, gwv1.HTTPProtocolType, "c.example.org")),
		listenerSet("infra", "no-cert", 3, "gw", secure),
	}
	toSet := httpRoute("infra", "to-set", 9, "infra/team-a", nil, "", "web")
	toSet.Spec.ParentRefs[0].Kind = ptr(gwv1.Kind("ListenerSet"))
	toElsewhere := httpRoute("apps", "to-elsewhere", 10, "apps/elsewhere", nil, "", "web")
	toElsewhere.Spec.ParentRefs[0].Kind = ptr(gwv1.Kind("ListenerSet"))
	in.HTTPRoutes = append(in.HTTPRoutes, toSet, toElsewhere)
	res := Build(in)

	st := res.Gateways[types.NamespacedName{Namespace: "infra", Name: "gw"}]
	if st.AttachedListenerSets == nil || *st.AttachedListenerSets != 1 {
		t.Errorf("attachedListenerSets %v, want 1 (team-a)", st.AttachedListenerSets)
	}
	for name, want := range map[string][2]string{
		"team-a":    {"True/Accepted", "True/Programmed"},
		"team-b":    {"False/ListenersNotValid", "False/ListenersNotValid"},
		"elsewhere": {"False/NotAllowed", "False/NotAllowed"},
		"no-cert":   {"False/ListenersNotValid", "False/ListenersNotValid"},
	} {
		ns := "infra"
		if name == "elsewhere" {
			ns = "apps"
		}
		ls := res.ListenerSets[types.NamespacedName{Namespace: ns, Name: name}]
		if got := [2]string{condition(ls.Conditions, "Accepted"), condition(ls.Conditions, "Programmed")}; got != want {
			t.Errorf("ListenerSet %s: %v, want %v", name, got, want)
		}
	}
	a := res.ListenerSets[types.NamespacedName{Namespace: "infra", Name: "team-a"}]
	for _, l := range a.Listeners {
		switch l.Name {
		case "a":
			if condition(l.Conditions, "Accepted") != "True/Accepted" || l.AttachedRoutes != 1 {
				t.Errorf("listener a: %+v", l)
			}
		case "same-as-gateway":
			if condition(l.Conditions, "Accepted") != "False/HostnameConflict" || condition(l.Conditions, "Conflicted") != "True/HostnameConflict" {
				t.Errorf("listener same-as-gateway: %+v", l.Conditions)
			}
		}
	}
	parents := res.Routes[RouteKey{"HTTPRoute", types.NamespacedName{Namespace: "infra", Name: "to-set"}}]
	if len(parents) != 1 || condition(parents[0].Conditions, "Accepted") != "True/Accepted" {
		t.Errorf("route to the set: %+v", parents)
	}
	parents = res.Routes[RouteKey{"HTTPRoute", types.NamespacedName{Namespace: "apps", Name: "to-elsewhere"}}]
	if len(parents) != 1 || condition(parents[0].Conditions, "Accepted") != "False/NotAllowedByListeners" {
		t.Errorf("route to a set not allowed: %+v", parents)
	}
	pt := res.Ports[20005]
	if pt == nil || len(pt.Hostnames) != 1 || pt.Hostnames[0] != "a.example.org" {
		t.Fatalf("port 8080: %+v", pt)
	}
	if _, rule, ok := pt.Tables[0].MatchRequest(&http.Request{Host: "a.example.org", URL: &url.URL{Path: "/"}}); !ok || rule.Source != "HTTPRoute infra/to-set" {
		t.Errorf("a.example.org:8080 not served by the route to the set")
	}
}
