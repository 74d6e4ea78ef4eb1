package controller

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"weft.dev/weft/internal/ingress/nginx"
	"weft.dev/weft/internal/ingress/proxy"
	"weft.dev/weft/internal/ingress/route"
)

type fakeLister struct {
	svcs    map[string]*corev1.Service
	slices  map[string][]*discoveryv1.EndpointSlice
	configs map[string]*corev1.ConfigMap
}

func (f fakeLister) ConfigMap(ns, name string) *corev1.ConfigMap { return f.configs[ns+"/"+name] }

func (f fakeLister) Service(ns, name string) (*corev1.Service, error) {
	if s := f.svcs[ns+"/"+name]; s != nil {
		return s, nil
	}
	return nil, fmt.Errorf("not found")
}

func (f fakeLister) EndpointSlices(ns, svc string) ([]*discoveryv1.EndpointSlice, error) {
	return f.slices[ns+"/"+svc], nil
}

func svc(name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Spec: corev1.ServiceSpec{Ports: ports}}
}

func slice(portName string, port int32, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv4, Endpoints: eps,
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To(portName), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}}}
}

func ep(ip string, ready bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}}
}

func ing(name string, port networkingv1.ServiceBackendPort) *networkingv1.Ingress {
	return &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Spec: networkingv1.IngressSpec{
		Rules: []networkingv1.IngressRule{{Host: name + ".example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
			Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: ptr.To(networkingv1.PathTypePrefix),
				Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web", Port: port}}}}}}}}}}
}

// A backend port by number or by name resolves to the target port the
// EndpointSlices carry for that Service port, ready endpoints only; a
// missing Service or port is reported on the Ingress naming it.
func TestBuildResolvesServicePortsToReadyEndpoints(t *testing.T) {
	l := fakeLister{
		svcs: map[string]*corev1.Service{"ns/web": svc("web",
			corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)},
			corev1.ServicePort{Name: "admin", Port: 81, TargetPort: intstr.FromString("adm")})},
		slices: map[string][]*discoveryv1.EndpointSlice{"ns/web": {
			slice("http", 8080, ep("10.0.0.1", true), ep("10.0.0.2", false)),
			slice("admin", 9000, ep("10.0.0.1", true), discoveryv1.Endpoint{Addresses: []string{"evil.example.com"}}),
		}},
	}
	byNum := ing("num", networkingv1.ServiceBackendPort{Number: 80})
	byName := ing("name", networkingv1.ServiceBackendPort{Name: "admin"})
	missing := ing("missing", networkingv1.ServiceBackendPort{Number: 99})
	s, _, probs := Build([]*networkingv1.Ingress{byNum, byName, missing}, l)
	for host, want := range map[string]string{"num.example.com": "10.0.0.1:8080", "name.example.com": "10.0.0.1:9000"} {
		r, ok := s.Table.Match(host, "/")
		if !ok {
			t.Fatalf("%s: no route", host)
		}
		if got := strings.Join(s.Endpoints[r.Backend], ","); got != want {
			t.Errorf("%s: endpoints %q, want %q", host, got, want)
		}
	}
	if len(probs) != 1 || probs[0].Ingress != "ns/missing" || !strings.Contains(probs[0].Message, "no port 99") {
		t.Errorf("problems %v, want one about ns/missing's port 99", probs)
	}
	r, _ := s.Table.Match("missing.example.com", "/")
	if len(s.Endpoints[r.Backend]) != 0 {
		t.Errorf("a missing port has endpoints %v", s.Endpoints[r.Backend])
	}
}

func TestOursPicksByClassAndDefault(t *testing.T) {
	classes := []*networkingv1.IngressClass{
		{ObjectMeta: metav1.ObjectMeta{Name: "weft", Annotations: map[string]string{DefaultClassAnnotation: "true"}}, Spec: networkingv1.IngressClassSpec{Controller: ControllerName}},
		{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: networkingv1.IngressClassSpec{Controller: "example.com/other"}},
	}
	mk := func(name string, class *string, ann string) *networkingv1.Ingress {
		i := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}}, Spec: networkingv1.IngressSpec{IngressClassName: class}}
		if ann != "" {
			i.Annotations["kubernetes.io/ingress.class"] = ann
		}
		return i
	}
	got := Ours([]*networkingv1.Ingress{mk("named", ptr.To("weft"), ""), mk("none", nil, ""), mk("other", ptr.To("other"), ""),
		mk("annotated", nil, "weft"), mk("annotated-other", nil, "other"), mk("unknown", ptr.To("gone"), "")}, classes)
	var names []string
	for _, i := range got {
		names = append(names, i.Name)
	}
	if strings.Join(names, ",") != "named,none,annotated" {
		t.Errorf("served %v, want named, none (default class), annotated", names)
	}
	classes[0].Annotations = nil
	if got := Ours([]*networkingv1.Ingress{mk("none", nil, "")}, classes); len(got) != 0 {
		t.Error("an Ingress without a class is served with no default class")
	}
}

// A Service port with appProtocol kubernetes.io/h2c or grpc is reached
// with HTTP/2 without TLS; others with HTTP/1.1.
func TestBuildMarksH2CBackends(t *testing.T) {
	l := fakeLister{svcs: map[string]*corev1.Service{"ns/web": svc("web",
		corev1.ServicePort{Name: "grpc", Port: 80, AppProtocol: ptr.To("kubernetes.io/h2c")},
		corev1.ServicePort{Name: "http", Port: 81})}}
	s, _, _ := Build([]*networkingv1.Ingress{ing("g", networkingv1.ServiceBackendPort{Number: 80}), ing("h", networkingv1.ServiceBackendPort{Number: 81})}, l)
	for host, want := range map[string]bool{"g.example.com": true, "h.example.com": false} {
		r, _ := s.Table.Match(host, "/")
		if s.H2C[r.Backend] != want {
			t.Errorf("%s: h2c %v, want %v", host, s.H2C[r.Backend], want)
		}
	}
}

// custom-headers: a ConfigMap in the Ingress's namespace is read into its
// routes' headers, framing headers and bad names left out and reported;
// one in another namespace is never read (nor watched); a missing one is
// reported.
func TestCustomHeadersFromConfigMaps(t *testing.T) {
	withHeaders := func(name, ref string) *networkingv1.Ingress {
		i := ing(name, networkingv1.ServiceBackendPort{Number: 80})
		i.Annotations = map[string]string{nginx.Prefix + "custom-headers": ref}
		return i
	}
	l := fakeLister{svcs: map[string]*corev1.Service{"ns/web": svc("web", corev1.ServicePort{Name: "http", Port: 80})},
		configs: map[string]*corev1.ConfigMap{
			"ns/hdrs":    {Data: map[string]string{"x-team": "payments", "Content-Length": "0", "bad name": "x", "Proxy-Authorization": "y"}},
			"other/hdrs": {Data: map[string]string{"X-Stolen": "secret"}},
		}}
	ings := []*networkingv1.Ingress{withHeaders("own", "hdrs"), withHeaders("qualified", "ns/hdrs"), withHeaders("foreign", "other/hdrs"), withHeaders("missing", "nope")}
	if got := HeaderConfigMaps(ings); strings.Join(got, ",") != "ns/hdrs,ns/hdrs,ns/nope" {
		t.Errorf("watched %v: only the Ingresses' own namespace", got)
	}
	s, _, probs := Build(ings, l)
	for host, want := range map[string]string{"own": "payments", "qualified": "payments", "foreign": "", "missing": ""} {
		r, ok := s.Table.Match(host+".example.com", "/")
		if !ok {
			t.Fatalf("%s: no route", host)
		}
		var got string
		if r.Policy != nil {
			got = r.Policy.ResponseHeaders["X-Team"]
			if len(r.Policy.ResponseHeaders) > 1 || r.Policy.ResponseHeaders["X-Stolen"] != "" {
				t.Errorf("%s: headers %v", host, r.Policy.ResponseHeaders)
			}
		}
		if got != want {
			t.Errorf("%s: X-Team %q, want %q", host, got, want)
		}
	}
	var msgs []string
	for _, p := range probs {
		msgs = append(msgs, p.Ingress+": "+p.Message)
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{"ns/own: annotation nginx.ingress.kubernetes.io/custom-headers: ignored: ConfigMap hdrs: Content-Length may not be set",
		"ns/own: annotation nginx.ingress.kubernetes.io/custom-headers: ignored: ConfigMap hdrs: \"bad name\" is not a header",
		"ns/own: annotation nginx.ingress.kubernetes.io/custom-headers: ignored: ConfigMap hdrs: Proxy-Authorization may not be set",
		"ns/foreign: annotation nginx.ingress.kubernetes.io/custom-headers: ignored: ConfigMap other/hdrs is in another namespace",
		"ns/missing: annotation nginx.ingress.kubernetes.io/custom-headers: ignored: ConfigMap ns/nope not found"} {
		if !strings.Contains(all, want) {
			t.Errorf("no problem %q among:\n%s", want, all)
		}
	}
}

// The Gateway listeners' rules get the endpoints of their backends and of
// their mirrors; an invalid backend gets none.
func TestResolvePortsResolvesBackendsAndMirrors(t *testing.T) {
	l := fakeLister{
		svcs: map[string]*corev1.Service{"ns/web": svc("web", corev1.ServicePort{Name: "http", Port: 80}),
			"ns/mirror": svc("mirror", corev1.ServicePort{Name: "http", Port: 80})},
		slices: map[string][]*discoveryv1.EndpointSlice{"ns/web": {slice("http", 8080, ep("10.0.0.1", true))},
			"ns/mirror": {slice("http", 8080, ep("10.0.0.9", true))}},
	}
	web, mirror := route.Backend{Namespace: "ns", Service: "web", Port: 80}, route.Backend{Namespace: "ns", Service: "mirror", Port: 80}
	tb := route.NewTable()
	tb.Host("").AddRule(route.Prefix, "/", &route.Rule{Backends: []route.WeightedBackend{{Backend: web, Weight: 1}, {Weight: 1, Invalid: true}},
		Filters: route.Filters{Mirrors: []route.Mirror{{Backend: mirror, Percent: 100}}}})
	s := &proxy.Snapshot{Endpoints: map[route.Backend][]string{}, H2C: map[route.Backend]bool{},
		Ports: map[int]*proxy.Port{20000: {Hostnames: []string{""}, Tables: []*route.Table{tb}}}}
	ResolvePorts(s, l)
	if got := strings.Join(s.Endpoints[web], ","); got != "10.0.0.1:8080" {
		t.Errorf("backend: %q", got)
	}
	if got := strings.Join(s.Endpoints[mirror], ","); got != "10.0.0.9:8080" {
		t.Errorf("mirror: %q", got)
	}
	if _, ok := s.Endpoints[route.Backend{}]; ok {
		t.Error("the invalid backend was resolved")
	}
}
