// Package controller is weft ingress's controller: it watches Ingresses of
// its class, their Services and EndpointSlices, builds the proxy's
// snapshot and swaps it in, reports what it cannot serve as Events, and
// writes each Ingress's status. Build (this file) is the pure part.
package controller

import (
	"net/http"

	"fmt"
	"golang.org/x/net/http/httpguts"
	"net"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"weft.dev/weft/internal/ingress/nginx"
	"weft.dev/weft/internal/ingress/proxy"
	"weft.dev/weft/internal/ingress/route"
)

// ControllerName is what an IngressClass names in spec.controller for
// weft to serve its Ingresses.
const ControllerName = "weft.dev/ingress"

// DefaultClassAnnotation marks the IngressClass for Ingresses naming none.
const DefaultClassAnnotation = "ingressclass.kubernetes.io/is-default-class"

// Lister is what Build reads: the informers' caches, or fakes in tests.
type Lister interface {
	Service(namespace, name string) (*corev1.Service, error)
	EndpointSlices(namespace, service string) ([]*discoveryv1.EndpointSlice, error)
	// ConfigMap is one of those HeaderConfigMaps names (nil: not there).
	ConfigMap(namespace, name string) *corev1.ConfigMap
}

// Ours picks the Ingresses this controller serves: those naming one of
// its classes, and those naming none when one of its classes is the
// default.
func Ours(ings []*networkingv1.Ingress, classes []*networkingv1.IngressClass) []*networkingv1.Ingress {
	mine, dflt := map[string]bool{}, false
	for _, c := range classes {
		if c.Spec.Controller == ControllerName {
			mine[c.Name] = true
			dflt = dflt || c.Annotations[DefaultClassAnnotation] == "true"
		}
	}
	var out []*networkingv1.Ingress
	for _, ing := range ings {
		name := ""
		if ing.Spec.IngressClassName != nil {
			name = *ing.Spec.IngressClassName
		} else if a := ing.Annotations["kubernetes.io/ingress.class"]; a != "" {
			name = a // the deprecated annotation, still widely used
		}
		if mine[name] || (name == "" && dflt) {
			out = append(out, ing)
		}
	}
	return out
}

// Build translates Ingresses into a snapshot: the route table and, for
// every backend a route names, the ready endpoints of its Service port.
func Build(ings []*networkingv1.Ingress, l Lister) (*proxy.Snapshot, []route.TLS, []route.Problem) {
	policies, opts, probs := readAnnotations(ings, l)
	t, tls, routeProbs := route.FromIngresses(ings, opts)
	probs = append(routeProbs, probs...)
	for _, r := range t.Routes() {
		r.Policy = policies[r.Source]
	}
	s := &proxy.Snapshot{Table: t, Endpoints: map[route.Backend][]string{}, H2C: map[route.Backend]bool{}}
	resolve := func(b route.Backend, source string) {
		if _, done := s.Endpoints[b]; done {
			return
		}
		eps, h2c, err := endpoints(b, l)
		if err != nil && source != "" {
			probs = append(probs, route.Problem{Ingress: source, Message: err.Error()})
		}
		s.Endpoints[b], s.H2C[b] = eps, h2c
	}
	for _, r := range t.Routes() {
		resolve(r.Backend, r.Source)
		if r.Canary != nil {
			resolve(r.Canary.Backend, r.Canary.Source)
		}
	}
	if d := t.Default; d != nil {
		resolve(*d, "")
	}
	return s, tls, probs
}

// ResolvePorts adds the endpoints of every backend and mirror the Gateway
// listeners' rules name to the snapshot.
func ResolvePorts(s *proxy.Snapshot, l Lister) {
	for _, pt := range s.Ports {
		for _, t := range pt.Tables {
			for _, r := range t.Routes() {
				for _, rule := range r.Rules {
					for _, b := range rule.Backends {
						if !b.Invalid {
							resolveOnce(s, b.Backend, l)
						}
					}
					for _, m := range rule.Filters.Mirrors {
						resolveOnce(s, m.Backend, l)
					}
				}
			}
		}
	}
}

// resolveOnce adds a backend's endpoints; a backend that does not resolve
// has none (the route's status says why).
func resolveOnce(s *proxy.Snapshot, b route.Backend, l Lister) {
	if _, done := s.Endpoints[b]; done {
		return
	}
	eps, h2c, _ := endpoints(b, l)
	s.Endpoints[b], s.H2C[b] = eps, h2c
}

// readAnnotations reads each Ingress's ingress-nginx annotations into the
// policy of its routes and the table's options: the hosts whose paths are
// regular expressions (every host of an Ingress with use-regex or
// rewrite-target, for all Ingresses, as ingress-nginx does) and the canary
// Ingresses; and a problem (an Event on the Ingress) for every annotation
// not honoured as written.
func readAnnotations(ings []*networkingv1.Ingress, l Lister) (map[string]*route.Policy, route.Options, []route.Problem) {
	policies := map[string]*route.Policy{}
	opts := route.Options{RegexHosts: map[string]bool{}, Canaries: map[string]*route.CanaryRule{}}
	var probs []route.Problem
	for _, ing := range ings {
		src := ing.Namespace + "/" + ing.Name
		pol, findings := nginx.Parse(ing.Annotations, nginx.SSLRedirect(ing))
		policies[src] = pol
		if pol != nil && pol.Regex {
			for _, rule := range ing.Spec.Rules {
				opts.RegexHosts[strings.ToLower(rule.Host)] = true
			}
		}
		if pol != nil && pol.Canary != nil {
			opts.Canaries[src] = pol.Canary
		}
		if pol != nil && pol.HeadersFrom != "" {
			pol.ResponseHeaders, findings = responseHeaders(ing, pol.HeadersFrom, l, findings)
		}
		for _, f := range findings {
			if f.Verdict == nginx.Ignored {
				probs = append(probs, route.Problem{Ingress: src, Message: fmt.Sprintf("annotation %s: %s: %s", f.Annotation, f.Verdict, f.Why)})
			}
		}
	}
	return policies, opts, probs
}

// HeaderConfigMaps lists the ConfigMaps ("namespace/name") whose headers
// the Ingresses' custom-headers annotations ask for: only in each
// Ingress's own namespace.
func HeaderConfigMaps(ings []*networkingv1.Ingress) []string {
	var out []string
	for _, ing := range ings {
		if ref := ing.Annotations[nginx.Prefix+"custom-headers"]; ref != "" {
			if ns, name := headersRef(ing, ref); ns == ing.Namespace {
				out = append(out, ns+"/"+name)
			}
		}
	}
	return out
}

func headersRef(ing *networkingv1.Ingress, ref string) (ns, name string) {
	if ns, name, ok := strings.Cut(ref, "/"); ok {
		return ns, name
	}
	return ing.Namespace, ref
}

// framingHeaders may not be set by custom-headers: they would change how
// the response is read or the connection kept, or set cookies.
var framingHeaders = map[string]bool{"Content-Length": true, "Transfer-Encoding": true, "Connection": true, "Keep-Alive": true,
	"Upgrade": true, "Trailer": true, "Te": true, "Proxy-Connection": true, "Content-Encoding": true, "Set-Cookie": true, "Date": true}

// responseHeaders reads the ConfigMap an Ingress's custom-headers names
// into headers, adding a finding for each refusal.
func responseHeaders(ing *networkingv1.Ingress, ref string, l Lister, findings []nginx.Finding) (map[string]string, []nginx.Finding) {
	refuse := func(format string, a ...any) {
		findings = append(findings, nginx.Finding{Annotation: nginx.Prefix + "custom-headers", Value: ref, Verdict: nginx.Ignored, Why: fmt.Sprintf(format, a...)})
	}
	ns, name := headersRef(ing, ref)
	if ns != ing.Namespace {
		refuse("ConfigMap %s/%s is in another namespace than the Ingress; not read", ns, name)
		return nil, findings
	}
	cm := l.ConfigMap(ns, name)
	if cm == nil {
		refuse("ConfigMap %s/%s not found (yet)", ns, name)
		return nil, findings
	}
	out := map[string]string{}
	for k, v := range cm.Data {
		key := http.CanonicalHeaderKey(k)
		switch {
		case !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v):
			refuse("ConfigMap %s: %q is not a header name and value; left out", name, k)
		case framingHeaders[key] || strings.HasPrefix(key, "Proxy-"):
			refuse("ConfigMap %s: %s may not be set; left out", name, key)
		default:
			out[key] = v
		}
	}
	return out, findings
}

// h2cProtocols are appProtocol values of a Service port that speaks
// HTTP/2 without TLS: the Kubernetes standard name, and gRPC's.
var h2cProtocols = map[string]bool{"kubernetes.io/h2c": true, "grpc": true, "h2c": true}

// endpoints resolves a backend to "ip:port" of ready endpoints: the
// Service port by number or name, then that port's name in the Service's
// EndpointSlices (which carry target ports); and whether it speaks h2c.
func endpoints(b route.Backend, l Lister) ([]string, bool, error) {
	svc, err := l.Service(b.Namespace, b.Service)
	if err != nil {
		return nil, false, fmt.Errorf("service %s/%s: %v", b.Namespace, b.Service, err)
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if (b.Port != 0 && p.Port == b.Port) || (b.PortName != "" && p.Name == b.PortName) {
			sp = p
		}
	}
	if sp == nil {
		return nil, false, fmt.Errorf("service %s/%s has no port %s", b.Namespace, b.Service, portText(b))
	}
	if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
		return nil, false, fmt.Errorf("service %s/%s port %s is %s, not TCP", b.Namespace, b.Service, portText(b), sp.Protocol)
	}
	h2c := sp.AppProtocol != nil && h2cProtocols[*sp.AppProtocol]
	slices, err := l.EndpointSlices(b.Namespace, b.Service)
	if err != nil {
		return nil, h2c, err
	}
	seen := map[string]bool{}
	var out []string
	for _, sl := range slices {
		if sl.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		port := int32(0)
		for _, p := range sl.Ports {
			if p.Port != nil && ptrString(p.Name) == sp.Name && (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) {
				port = *p.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, ep := range sl.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				if net.ParseIP(a) == nil {
					continue // not an address: refuse to dial a name from an object
				}
				hp := net.JoinHostPort(a, strconv.Itoa(int(port)))
				if !seen[hp] {
					seen[hp] = true
					out = append(out, hp)
				}
			}
		}
	}
	sort.Strings(out)
	return out, h2c, nil
}

func portText(b route.Backend) string {
	if b.PortName != "" {
		return strconv.Quote(b.PortName)
	}
	return strconv.Itoa(int(b.Port))
}

func ptrString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
