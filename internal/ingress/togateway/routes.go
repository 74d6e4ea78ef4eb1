package togateway

import (
	"fmt"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weft.dev/weft/internal/ingress/nginx"
	"weft.dev/weft/internal/ingress/route"
)

// addRoutes writes an HTTPRoute per host of the Ingress (and its default
// backend as a route for every host), attached to the HTTP listener and
// to the host's HTTPS listener; with ssl-redirect, plain HTTP gets a
// redirect route instead.
func (res *Result) addRoutes(ing *networkingv1.Ingress, pol *route.Policy, tlsHosts map[string]string, canaries []*networkingv1.Ingress, opts Options) {
	res.notePolicy(ing, pol)
	parent := func(section string) gwv1.ParentReference {
		return gwv1.ParentReference{Namespace: ptr(gwv1.Namespace(opts.Namespace)), Name: gwv1.ObjectName(opts.Name), SectionName: ptr(gwv1.SectionName(section))}
	}
	for i, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		name := ing.Name
		if len(ing.Spec.Rules) > 1 {
			name = fmt.Sprintf("%s-%d", ing.Name, i)
		}
		hr := &gwv1.HTTPRoute{TypeMeta: withKind("HTTPRoute"), ObjectMeta: metav1.ObjectMeta{Namespace: ing.Namespace, Name: name}}
		if rule.Host != "" {
			hr.Spec.Hostnames = []gwv1.Hostname{gwv1.Hostname(rule.Host)}
		}
		hr.Spec.Rules = res.rules(ing, rule, pol, canaries)
		listener, secure := tlsHosts[rule.Host]
		switch {
		case secure && pol != nil && pol.HTTPSRedirect:
			hr.Spec.ParentRefs = []gwv1.ParentReference{parent(listener)}
			res.Routes = append(res.Routes, httpsRedirect(ing, name, hr.Spec.Hostnames, parent("http")))
		case secure:
			hr.Spec.ParentRefs = []gwv1.ParentReference{parent("http"), parent(listener)}
		default:
			hr.Spec.ParentRefs = []gwv1.ParentReference{parent("http")}
		}
		res.Routes = append(res.Routes, hr)
	}
	if b := ing.Spec.DefaultBackend; b != nil {
		ref, why := backendRef(ing.Namespace, *b)
		if why != "" {
			res.note(ing, "defaultBackend", why)
			return
		}
		res.Routes = append(res.Routes, &gwv1.HTTPRoute{TypeMeta: withKind("HTTPRoute"), ObjectMeta: metav1.ObjectMeta{Namespace: ing.Namespace, Name: ing.Name + "-default"},
			Spec: gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{parent("http")}},
				Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{ref}}}}})
	}
}

func httpsRedirect(ing *networkingv1.Ingress, name string, hosts []gwv1.Hostname, parent gwv1.ParentReference) *gwv1.HTTPRoute {
	return &gwv1.HTTPRoute{TypeMeta: withKind("HTTPRoute"), ObjectMeta: metav1.ObjectMeta{Namespace: ing.Namespace, Name: name + "-https-redirect"},
		Spec: gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{parent}}, Hostnames: hosts,
			Rules: []gwv1.HTTPRouteRule{{Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestRedirect,
				RequestRedirect: &gwv1.HTTPRequestRedirectFilter{Scheme: ptr("https"), StatusCode: ptr(308)}}}}}}}
}

// rules are a host's paths as route rules, with the policy's filters and
// the canaries that repeat them.
func (res *Result) rules(ing *networkingv1.Ingress, rule networkingv1.IngressRule, pol *route.Policy, canaries []*networkingv1.Ingress) []gwv1.HTTPRouteRule {
	var out []gwv1.HTTPRouteRule
	if pol != nil && pol.AppRoot != "" {
		out = append(out, gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchExact), Value: ptr("/")}}},
			Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gwv1.HTTPRequestRedirectFilter{
				Path: &gwv1.HTTPPathModifier{Type: gwv1.FullPathHTTPPathModifier, ReplaceFullPath: ptr(pol.AppRoot)}, StatusCode: ptr(302)}}}})
	}
	for _, p := range rule.HTTP.Paths {
		match, rewrite, why := pathOf(p, pol)
		if why != "" {
			res.note(ing, "path "+p.Path, why)
			continue
		}
		ref, why := backendRef(ing.Namespace, p.Backend)
		if why != "" {
			res.note(ing, "path "+p.Path, why)
			continue
		}
		filters, redirecting := res.filters(ing, pol, rewrite)
		r := gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{{Path: &match}}, Filters: filters}
		if !redirecting {
			r.BackendRefs = []gwv1.HTTPBackendRef{ref}
		}
		if pol != nil && pol.ReadTimeout > 0 {
			r.Timeouts = &gwv1.HTTPRouteTimeouts{BackendRequest: ptr(gwv1.Duration(pol.ReadTimeout.String()))}
		}
		out = append(out, res.withCanaries(ing, rule.Host, p, r, canaries)...)
	}
	return out
}

// filters are the policy's filters for a rule; redirecting is true when
// the rule answers with a redirect (no backend).
func (res *Result) filters(ing *networkingv1.Ingress, pol *route.Policy, rewrite *gwv1.HTTPPathModifier) ([]gwv1.HTTPRouteFilter, bool) {
	if pol == nil {
		return nil, false
	}
	if pol.Redirect != nil {
		f, why := redirectFilter(pol.Redirect)
		if why != "" {
			res.note(ing, "permanent-redirect/temporal-redirect", why)
			return nil, false
		}
		res.note(ing, "permanent-redirect/temporal-redirect", "written as a RequestRedirect, which keeps the request's query string (ingress-nginx's redirect drops it)")
		return []gwv1.HTTPRouteFilter{f}, true
	}
	var out []gwv1.HTTPRouteFilter
	if rewrite != nil || pol.Host != "" {
		rw := &gwv1.HTTPURLRewriteFilter{Path: rewrite}
		if pol.Host != "" {
			rw.Hostname = ptr(gwv1.PreciseHostname(pol.Host))
		}
		out = append(out, gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterURLRewrite, URLRewrite: rw})
	}
	if pol.ForwardedPrefix != "" {
		out = append(out, gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gwv1.HTTPHeaderFilter{
			Set: []gwv1.HTTPHeader{{Name: "X-Forwarded-Prefix", Value: pol.ForwardedPrefix}}}})
	}
	if c := pol.CORS; c != nil {
		out = append(out, gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterCORS, CORS: corsFilter(c)})
	}
	return out, false
}

func corsFilter(c *route.CORS) *gwv1.HTTPCORSFilter {
	f := &gwv1.HTTPCORSFilter{AllowCredentials: ptr(c.Credentials), MaxAge: int32(c.MaxAgeSeconds)}
	for _, o := range c.Origins {
		f.AllowOrigins = append(f.AllowOrigins, gwv1.CORSOrigin(o))
	}
	for _, m := range split(c.Methods) {
		f.AllowMethods = append(f.AllowMethods, gwv1.HTTPMethodWithWildcard(m))
	}
	for _, h := range split(c.Headers) {
		f.AllowHeaders = append(f.AllowHeaders, gwv1.HTTPHeaderName(h))
	}
	for _, h := range split(c.ExposeHeaders) {
		f.ExposeHeaders = append(f.ExposeHeaders, gwv1.HTTPHeaderName(h))
	}
	return f
}

func split(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// withCanaries returns the rule, sharing its requests with the canaries
// that repeat its host and path: by weight as weighted backendRefs, by
// header as a rule before it with a header match.
func (res *Result) withCanaries(ing *networkingv1.Ingress, host string, p networkingv1.HTTPIngressPath, r gwv1.HTTPRouteRule, canaries []*networkingv1.Ingress) []gwv1.HTTPRouteRule {
	var before []gwv1.HTTPRouteRule
	for _, c := range canaries {
		cref, ok := canaryBackend(c, host, p)
		if !ok || len(r.BackendRefs) == 0 {
			continue
		}
		cpol, _ := nginx.Parse(c.Annotations, nginx.SSLRedirect(c))
		rule := cpol.Canary
		if rule.Cookie != "" {
			res.note(c, "canary-by-cookie", "the Gateway API matches no cookies")
		}
		if rule.Header != "" {
			value := "always"
			if rule.HeaderValue != "" {
				value = rule.HeaderValue
			}
			hr := r
			hr.Matches = []gwv1.HTTPRouteMatch{{Path: r.Matches[0].Path, Headers: []gwv1.HTTPHeaderMatch{{Name: gwv1.HTTPHeaderName(rule.Header), Value: value}}}}
			hr.BackendRefs = []gwv1.HTTPBackendRef{cref}
			before = append(before, hr)
			if rule.HeaderValue == "" {
				res.note(c, "canary-by-header", `"never" (always the main backend) has no Gateway API form`)
			}
		}
		if rule.Weight > 0 {
			total := rule.WeightTotal
			if total == 0 {
				total = 100
			}
			main := r.BackendRefs[0]
			main.Weight = ptr(int32(total - rule.Weight))
			cref.Weight = ptr(int32(rule.Weight))
			r.BackendRefs = []gwv1.HTTPBackendRef{main, cref}
		}
	}
	return append(before, r)
}

// canaryBackend is a canary Ingress's backend for the same host and path.
func canaryBackend(c *networkingv1.Ingress, host string, p networkingv1.HTTPIngressPath) (gwv1.HTTPBackendRef, bool) {
	for _, rule := range c.Spec.Rules {
		if rule.Host != host || rule.HTTP == nil {
			continue
		}
		for _, cp := range rule.HTTP.Paths {
			if cp.Path == p.Path {
				ref, why := backendRef(c.Namespace, cp.Backend)
				return ref, why == ""
			}
		}
	}
	return gwv1.HTTPBackendRef{}, false
}

// notePolicy lists what of the policy has no Gateway API form.
func (res *Result) notePolicy(ing *networkingv1.Ingress, pol *route.Policy) {
	if pol == nil {
		return
	}
	notes := []struct {
		on        bool
		what, why string
	}{
		{len(pol.Allow) > 0 || len(pol.Deny) > 0, "whitelist-source-range/denylist-source-range", "client address ranges: use a NetworkPolicy on the backends, or a policy attachment"},
		{pol.Affinity != nil, "affinity", "cookie session affinity is sessionPersistence, experimental in the Gateway API"},
		{pol.MaxBodyBytes > 0 || pol.UnlimitedBody, "proxy-body-size", "the Gateway API has no body limit; weft ingress's --max-body-bytes applies"},
		{pol.ConnectTimeout > 0, "proxy-connect-timeout", "the Gateway API has no connect timeout"},
		{pol.ReadTimeout > 0, "proxy-read-timeout", "written as timeouts.backendRequest, which bounds the whole answer, not each read"},
		{pol.H2C || pol.BackendTLS, "backend-protocol", "set the Service port's appProtocol (kubernetes.io/h2c), or a BackendTLSPolicy for TLS"},
		{pol.HeadersFrom != "", "custom-headers", "copy the ConfigMap's headers into a ResponseHeaderModifier filter"},
		{pol.HTTPSRedirect && len(ing.Spec.TLS) == 0, "ssl-redirect", "no TLS host: nothing to redirect to"},
	}
	for _, n := range notes {
		if n.on {
			res.note(ing, n.what, n.why)
		}
	}
}
