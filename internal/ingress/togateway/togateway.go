// Package togateway writes the Gateway API objects that do what a
// cluster's Ingresses do: one Gateway (an HTTP listener, an HTTPS listener
// per TLS host), an HTTPRoute per Ingress host, ReferenceGrants for the
// certificates, and ingress-nginx annotations as filters. What has no
// Gateway API form is listed, never silently dropped. It is pure: the
// caller reads the Ingresses and prints the result.
package togateway

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weft.dev/weft/internal/ingress/nginx"
	"weft.dev/weft/internal/ingress/route"
)

// Options name the Gateway the routes attach to.
type Options struct {
	Namespace, Name, Class string
}

// Result is the objects to apply and what could not be expressed.
type Result struct {
	Gateway *gwv1.Gateway
	Routes  []*gwv1.HTTPRoute
	Grants  []*gwv1.ReferenceGrant
	// NotExpressed: "namespace/name: what: why", one line each.
	NotExpressed []string
}

var typeGW = metav1.TypeMeta{APIVersion: gwv1.GroupVersion.String()}

// Convert translates Ingresses (already filtered to those weft serves).
func Convert(ings []*networkingv1.Ingress, opts Options) *Result {
	res := &Result{Gateway: &gwv1.Gateway{TypeMeta: withKind("Gateway"), ObjectMeta: metav1.ObjectMeta{Namespace: opts.Namespace, Name: opts.Name},
		Spec: gwv1.GatewaySpec{GatewayClassName: gwv1.ObjectName(opts.Class), Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType,
			AllowedRoutes: &gwv1.AllowedRoutes{Namespaces: &gwv1.RouteNamespaces{From: ptr(gwv1.NamespacesFromAll)}}}}}}}
	sorted := append([]*networkingv1.Ingress(nil), ings...)
	sort.Slice(sorted, func(i, j int) bool { return key(sorted[i]) < key(sorted[j]) })
	canaries := map[string][]*networkingv1.Ingress{} // by namespace
	for _, ing := range sorted {
		if pol, _ := nginx.Parse(ing.Annotations, nginx.SSLRedirect(ing)); pol != nil && pol.Canary != nil {
			canaries[ing.Namespace] = append(canaries[ing.Namespace], ing)
		}
	}
	grants := map[string]bool{}
	for _, ing := range sorted {
		pol, findings := nginx.Parse(ing.Annotations, nginx.SSLRedirect(ing))
		if pol != nil && pol.Canary != nil {
			continue // joins the routes it repeats
		}
		for _, f := range findings {
			if f.Verdict == nginx.Ignored {
				res.note(ing, f.Annotation, "weft ignores it too: "+f.Why)
			}
		}
		tlsHosts := res.addTLS(ing, opts, grants)
		res.addRoutes(ing, pol, tlsHosts, canaries[ing.Namespace], opts)
	}
	return res
}

func key(ing *networkingv1.Ingress) string { return ing.Namespace + "/" + ing.Name }

func withKind(kind string) metav1.TypeMeta {
	t := typeGW
	t.Kind = kind
	return t
}

func (res *Result) note(ing *networkingv1.Ingress, what, why string) {
	res.NotExpressed = append(res.NotExpressed, fmt.Sprintf("%s: %s: %s", key(ing), what, why))
}

// addTLS adds an HTTPS listener per TLS host of the Ingress (its Secret
// in the Ingress's namespace, a ReferenceGrant letting the Gateway read
// it) and returns the hosts.
func (res *Result) addTLS(ing *networkingv1.Ingress, opts Options, grants map[string]bool) map[string]string {
	hosts := map[string]string{} // host → listener name
	for _, t := range ing.Spec.TLS {
		if t.SecretName == "" {
			res.note(ing, "tls", "no secretName (the controller's default certificate): a Gateway listener needs a certificate")
			continue
		}
		for _, h := range t.Hosts {
			name := listenerName(h)
			if listenerExists(res.Gateway, name) {
				hosts[h] = name
				continue // an earlier Ingress named a certificate for this host; it serves, as in weft ingress
			}
			l := gwv1.Listener{Name: gwv1.SectionName(name), Port: 443, Protocol: gwv1.HTTPSProtocolType, Hostname: ptr(gwv1.Hostname(h)),
				TLS:           &gwv1.ListenerTLSConfig{Mode: ptr(gwv1.TLSModeTerminate), CertificateRefs: []gwv1.SecretObjectReference{{Name: gwv1.ObjectName(t.SecretName)}}},
				AllowedRoutes: &gwv1.AllowedRoutes{Namespaces: &gwv1.RouteNamespaces{From: ptr(gwv1.NamespacesFromAll)}}}
			if ing.Namespace != opts.Namespace {
				l.TLS.CertificateRefs[0].Namespace = ptr(gwv1.Namespace(ing.Namespace))
				res.grant(ing.Namespace, opts, grants)
			}
			res.Gateway.Spec.Listeners = append(res.Gateway.Spec.Listeners, l)
			hosts[h] = name
		}
	}
	return hosts
}

func listenerExists(g *gwv1.Gateway, name string) bool {
	for _, l := range g.Spec.Listeners {
		if string(l.Name) == name {
			return true
		}
	}
	return false
}

// listenerName is a listener name (a DNS label-like section name) for a host.
func listenerName(host string) string {
	return "https-" + strings.NewReplacer("*", "wildcard", ".", "-").Replace(strings.ToLower(host))
}

func (res *Result) grant(ns string, opts Options, done map[string]bool) {
	if done[ns] {
		return
	}
	done[ns] = true
	res.Grants = append(res.Grants, &gwv1.ReferenceGrant{TypeMeta: withKind("ReferenceGrant"),
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "weft-gateway-" + opts.Name + "-certificates"},
		Spec: gwv1.ReferenceGrantSpec{
			From: []gwv1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "Gateway", Namespace: gwv1.Namespace(opts.Namespace)}},
			To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Secret"}}}})
}

// regexPrefix is ingress-nginx's usual way of writing "this prefix, its
// rest kept": path "/app(/|$)(.*)" with rewrite-target "/$2".
var regexPrefix = regexp.MustCompile(`^(/[^()*+?\[\]{}|\\^$]*?)\(/\|\$\)\(\.\*\)$`)

// pathOf is a path's Gateway API match and, for rewrite-target, the
// rewrite; ok false when it has no Gateway API form.
func pathOf(p networkingv1.HTTPIngressPath, pol *route.Policy) (match gwv1.HTTPPathMatch, rewrite *gwv1.HTTPPathModifier, why string) {
	value := p.Path
	if value == "" {
		value = "/"
	}
	typ := gwv1.PathMatchPathPrefix
	if p.PathType != nil && *p.PathType == networkingv1.PathTypeExact {
		typ = gwv1.PathMatchExact
	}
	if pol != nil && pol.Regex {
		m := regexPrefix.FindStringSubmatch(value)
		switch {
		case m != nil && pol.RewriteTarget == "/$2":
			return gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchPathPrefix), Value: ptr(m[1])},
				&gwv1.HTTPPathModifier{Type: gwv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr("/")}, ""
		case strings.ContainsAny(value, "()*+?[]{}|\\^$"):
			return match, nil, "a regular expression (use-regex/rewrite-target): Gateway API paths are prefixes or exact"
		case pol.RewriteTarget != "" && !strings.Contains(pol.RewriteTarget, "$"):
			return gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchPathPrefix), Value: ptr(value)},
				&gwv1.HTTPPathModifier{Type: gwv1.FullPathHTTPPathModifier, ReplaceFullPath: ptr(pol.RewriteTarget)}, ""
		case pol.RewriteTarget != "":
			return match, nil, fmt.Sprintf("rewrite-target %q uses groups of a regular expression path", pol.RewriteTarget)
		}
	}
	return gwv1.HTTPPathMatch{Type: ptr(typ), Value: ptr(value)}, nil, ""
}

// backendRef of an Ingress backend; the Gateway API names ports by number.
func backendRef(ns string, b networkingv1.IngressBackend) (gwv1.HTTPBackendRef, string) {
	if b.Service == nil {
		return gwv1.HTTPBackendRef{}, "a resource backend has no Gateway API form"
	}
	if b.Service.Port.Number == 0 {
		return gwv1.HTTPBackendRef{}, fmt.Sprintf("Service %s port %q is named: a backendRef takes the port number", b.Service.Name, b.Service.Port.Name)
	}
	return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
		Name: gwv1.ObjectName(b.Service.Name), Port: ptr(gwv1.PortNumber(b.Service.Port.Number))}}}, ""
}

// redirectFilter is a fixed redirect as a RequestRedirect filter, which
// keeps the request's query (ingress-nginx's drops it): the caller notes
// that.
func redirectFilter(r *route.Redirect) (gwv1.HTTPRouteFilter, string) {
	u, err := url.Parse(r.Location)
	if err != nil || u.Host == "" {
		return gwv1.HTTPRouteFilter{}, fmt.Sprintf("redirect to %q: not an absolute URL", r.Location)
	}
	f := &gwv1.HTTPRequestRedirectFilter{Scheme: ptr(u.Scheme), Hostname: ptr(gwv1.PreciseHostname(u.Hostname())), StatusCode: ptr(r.Code)}
	if u.Port() != "" {
		var port int32
		fmt.Sscanf(u.Port(), "%d", &port)
		f.Port = ptr(port)
	}
	if u.Path != "" {
		f.Path = &gwv1.HTTPPathModifier{Type: gwv1.FullPathHTTPPathModifier, ReplaceFullPath: ptr(u.Path)}
	}
	if r.Code != http.StatusMovedPermanently && r.Code != http.StatusFound && r.Code != http.StatusSeeOther &&
		r.Code != http.StatusTemporaryRedirect && r.Code != http.StatusPermanentRedirect {
		return gwv1.HTTPRouteFilter{}, fmt.Sprintf("redirect code %d: the Gateway API has 301, 302, 303, 307 and 308", r.Code)
	}
	return gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterRequestRedirect, RequestRedirect: f}, ""
}

func ptr[T any](v T) *T { return &v }
