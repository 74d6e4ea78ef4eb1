package gateway

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weft.dev/weft/internal/ingress/route"
)

// compiled is an HTTPRoute's rules in the route model, with what stops
// them from resolving.
type compiled struct {
	paths []pathRule
	// resolvedReason/Message: the first reference that did not resolve
	// ("": all did).
	resolvedReason, resolvedMessage string
	// dropped lists rules left out, each with why.
	dropped []string
	// services are the Services its backends are.
	services []types.NamespacedName
}

type pathRule struct {
	kind route.PathKind
	path string
	rule *route.Rule
}

// routeMeta is what attaching needs of a route of any kind.
type routeMeta struct {
	kind            string // HTTPRoute, GRPCRoute
	namespace, name string
	generation      int64
	created         time.Time
	parents         []gwv1.ParentReference
	hostnames       []gwv1.Hostname
	obj             any // the route object itself
}

// RouteKey names a route of some kind.
type RouteKey struct {
	Kind string
	types.NamespacedName
}

func httpMeta(r *gwv1.HTTPRoute) routeMeta {
	return routeMeta{kind: "HTTPRoute", namespace: r.Namespace, name: r.Name, generation: r.Generation, created: r.CreationTimestamp.Time,
		parents: r.Spec.ParentRefs, hostnames: r.Spec.Hostnames, obj: r}
}

// attachRoute attaches a route to the listeners its parentRefs name and
// allow it, adds its rules to their tables, and records its parent
// statuses.
func attachRoute(r routeMeta, compile func(Input) *compiled, p parents, in Input, res *Result) {
	// Compiled once per backend client certificate of the parents (the
	// rules' backends differ only in it).
	var certs []*backendCert // a route has few parents: a slice, not a map
	var byCert []*compiled
	for _, ref := range r.parents {
		gs, set := p.of(r.namespace, ref)
		if gs == nil {
			continue // not a parent of weft's: another controller's to report
		}
		var c *compiled
		if i := slices.Index(certs, gs.backendCert); i >= 0 {
			c = byCert[i]
		} else {
			in := in
			in.backendCert = gs.backendCert
			c = in.Memo.compile(r.obj, gs.backendCert, func() *compiled { return compile(in) })
			certs, byCert = append(certs, gs.backendCert), append(byCert, c)
		}
		var accepted bool
		var reason, msg string
		switch {
		case set == nil:
			accepted, reason, msg = attach(gs.listeners, r, ref, c, in)
		case !set.allowed:
			reason, msg = string(gwv1.RouteReasonNotAllowedByListeners), "the ListenerSet is not attached to its Gateway"
		default:
			accepted, reason, msg = attach(set.listeners, r, ref, c, in)
		}
		res.pending = append(res.pending, routeOutcome{route: &r, ref: ref, accepted: accepted, reason: reason, msg: msg, c: c,
			gw: types.NamespacedName{Namespace: gs.gw.Namespace, Name: gs.gw.Name}})
	}
}

// routeOutcome is a route's attachment to one parent, kept for its
// status: statuses are made after the proxy has its tables.
type routeOutcome struct {
	route       *routeMeta
	ref         gwv1.ParentReference
	accepted    bool
	reason, msg string
	c           *compiled
	gw          types.NamespacedName
}

// finishRoutes makes the route parent statuses of the outcomes, and
// notes which Gateways' routes send to each Service.
func (res *Result) finishRoutes() {
	if len(res.Routes) == 0 {
		res.Routes = make(map[RouteKey][]gwv1.RouteParentStatus, len(res.pending))
	}
	for _, o := range res.pending {
		r, c, accepted := o.route, o.c, o.accepted
		if accepted {
			for _, svc := range c.services {
				if res.serviceGateways[svc] == nil {
					res.serviceGateways[svc] = map[types.NamespacedName]bool{}
				}
				res.serviceGateways[svc][o.gw] = true
			}
		}
		conds := make([]metav1.Condition, 1, 3)
		conds[0] = cond("Accepted", accepted, o.reason, o.msg, r.generation)
		if c.resolvedReason == "" {
			conds = append(conds, cond("ResolvedRefs", true, string(gwv1.RouteReasonResolvedRefs), "", r.generation))
		} else {
			conds = append(conds, cond("ResolvedRefs", false, c.resolvedReason, c.resolvedMessage, r.generation))
		}
		if accepted && len(c.dropped) > 0 {
			conds = append(conds, cond("PartiallyInvalid", true, string(gwv1.RouteReasonUnsupportedValue),
				"Dropped Rule(s): "+strings.Join(c.dropped, "; "), r.generation))
		}
		key := RouteKey{Kind: r.kind, NamespacedName: types.NamespacedName{Namespace: r.namespace, Name: r.name}}
		res.Routes[key] = append(res.Routes[key], gwv1.RouteParentStatus{ParentRef: o.ref, ControllerName: ControllerName, Conditions: conds})
	}
	res.pending = nil
}

// attach adds the route's rules to each listener of the parent (a
// Gateway's own, or a ListenerSet's) the parentRef selects that allows
// it; it returns the Accepted condition.
func attach(listeners []*listenerState, r routeMeta, ref gwv1.ParentReference, c *compiled, in Input) (bool, string, string) {
	named, allowed, attached := 0, 0, 0
	var hosts []string
	for _, h := range r.hostnames {
		hosts = append(hosts, string(h))
	}
	for _, l := range listeners {
		if (ref.SectionName != nil && *ref.SectionName != l.spec.Name) || (ref.Port != nil && *ref.Port != l.spec.Port) {
			continue
		}
		named++
		if !l.accepted || l.conflicted || !l.allows(r.kind, r.namespace, in.NamespaceLabels) {
			continue
		}
		allowed++
		names, ok := routeHostnames(l.hostname, hosts)
		if !ok {
			continue
		}
		attached++
		l.attached++
		for _, h := range names {
			vh := l.table.Host(h)
			for _, pr := range c.paths {
				vh.AddRule(pr.kind, pr.path, pr.rule)
			}
		}
	}
	switch {
	case named == 0:
		return false, string(gwv1.RouteReasonNoMatchingParent), "no listener of the Gateway matches the parentRef's sectionName and port"
	case allowed == 0:
		return false, string(gwv1.RouteReasonNotAllowedByListeners), "no listener allows routes of this kind from this namespace"
	case attached == 0:
		return false, string(gwv1.RouteReasonNoMatchingListenerHostname), "no listener hostname matches the route's hostnames"
	}
	return true, string(gwv1.RouteReasonAccepted), ""
}

// compileRules turns an HTTPRoute's rules into route-model rules, one per
// match.
func compileRules(r *gwv1.HTTPRoute, in Input) *compiled {
	c := &compiled{}
	m := httpMeta(r)
	name := nsName(r)
	for ri, rule := range r.Spec.Rules {
		filters, why := compileFilters(rule.Filters)
		backends := c.backends(m, httpBackendRefs(rule.BackendRefs), in)
		filters.Mirrors = c.mirrors(m, mirrorFilters(rule.Filters), in)
		filters.Retry = retry(rule.Retry)
		if why == "" {
			why = timeouts(rule.Timeouts, &filters)
		}
		if why != "" {
			// The API: a filter that cannot be applied must not be
			// skipped; the rule's requests get an error instead.
			c.dropped = append(c.dropped, errorf("rules[%d]: %s", ri, why))
			filters, backends = route.Filters{}, nil
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwv1.HTTPRouteMatch{{}}
		}
		for mi, m := range matches {
			x := &route.Rule{Backends: backends, Filters: filters, Source: "HTTPRoute " + name,
				Rank: route.Rank{Created: r.CreationTimestamp.Time, Name: name, Index: ri*1024 + mi}}
			kind, path, err := pathOf(m.Path)
			if err == "" {
				err = conditions(m, x)
			}
			if err != "" {
				c.dropped = append(c.dropped, errorf("rules[%d].matches[%d]: %s", ri, mi, err))
				continue
			}
			c.paths = append(c.paths, pathRule{kind: kind, path: path, rule: x})
		}
	}
	return c
}

func pathOf(p *gwv1.HTTPPathMatch) (route.PathKind, string, string) {
	if p == nil {
		return route.Prefix, "/", ""
	}
	v := "/"
	if p.Value != nil {
		v = *p.Value
	}
	if p.Type == nil || *p.Type == gwv1.PathMatchPathPrefix {
		return route.Prefix, v, ""
	}
	if *p.Type == gwv1.PathMatchExact {
		return route.Exact, v, ""
	}
	return 0, "", errorf("path match type %s is not supported", *p.Type)
}

// conditions copies a match's method, header and query conditions.
func conditions(m gwv1.HTTPRouteMatch, x *route.Rule) string {
	if m.Method != nil {
		x.Method = string(*m.Method)
	}
	for _, h := range m.Headers {
		vm, err := valueMatch(string(h.Name), h.Value, h.Type != nil && *h.Type == gwv1.HeaderMatchRegularExpression)
		if err != "" {
			return err
		}
		x.Headers = append(x.Headers, vm)
	}
	for _, q := range m.QueryParams {
		vm, err := valueMatch(string(q.Name), q.Value, q.Type != nil && *q.Type == gwv1.QueryParamMatchRegularExpression)
		if err != "" {
			return err
		}
		x.Query = append(x.Query, vm)
	}
	return ""
}

func valueMatch(name, value string, regex bool) (route.ValueMatch, string) {
	vm := route.ValueMatch{Name: name, Value: value}
	if regex {
		re, err := regexp.Compile(value)
		if err != nil {
			return vm, errorf("%s: %v", name, err)
		}
		vm.Regex = re
	}
	return vm, ""
}

// compileFilters returns the rule's filters, or why one cannot be applied.
func compileFilters(fs []gwv1.HTTPRouteFilter) (route.Filters, string) {
	var out route.Filters
	for _, f := range fs {
		switch f.Type {
		case gwv1.HTTPRouteFilterRequestHeaderModifier:
			out.RequestHeaders = headerChanges(f.RequestHeaderModifier)
		case gwv1.HTTPRouteFilterResponseHeaderModifier:
			out.ResponseHeaders = headerChanges(f.ResponseHeaderModifier)
		case gwv1.HTTPRouteFilterRequestRedirect:
			out.Redirect = redirect(f.RequestRedirect)
		case gwv1.HTTPRouteFilterURLRewrite:
			out.Rewrite = &route.URLRewrite{}
			if f.URLRewrite.Hostname != nil {
				out.Rewrite.Host = string(*f.URLRewrite.Hostname)
			}
			out.Rewrite.Path = pathChange(f.URLRewrite.Path)
		case gwv1.HTTPRouteFilterCORS:
			out.CORS = gatewayCORS(f.CORS)
		case gwv1.HTTPRouteFilterRequestMirror:
			// compiled by mirrors, which resolves the backend
		default:
			return out, errorf("filter %s is not supported", f.Type)
		}
	}
	return out, ""
}

func headerChanges(f *gwv1.HTTPHeaderFilter) *route.HeaderChanges {
	if f == nil {
		return nil
	}
	hc := &route.HeaderChanges{Remove: f.Remove}
	for _, h := range f.Set {
		hc.Set = append(hc.Set, route.Header{Name: http.CanonicalHeaderKey(string(h.Name)), Value: h.Value})
	}
	for _, h := range f.Add {
		hc.Add = append(hc.Add, route.Header{Name: http.CanonicalHeaderKey(string(h.Name)), Value: h.Value})
	}
	return hc
}

func redirect(f *gwv1.HTTPRequestRedirectFilter) *route.RedirectTo {
	to := &route.RedirectTo{Code: http.StatusFound, Path: pathChange(f.Path)}
	if f.Scheme != nil {
		to.Scheme = *f.Scheme
	}
	if f.Hostname != nil {
		to.Host = string(*f.Hostname)
	}
	if f.Port != nil {
		to.Port = *f.Port
	}
	if f.StatusCode != nil {
		to.Code = *f.StatusCode
	}
	return to
}

func pathChange(p *gwv1.HTTPPathModifier) *route.PathChange {
	switch {
	case p == nil:
		return nil
	case p.Type == gwv1.FullPathHTTPPathModifier && p.ReplaceFullPath != nil:
		return &route.PathChange{Full: *p.ReplaceFullPath}
	case p.Type == gwv1.PrefixMatchHTTPPathModifier && p.ReplacePrefixMatch != nil:
		return &route.PathChange{Prefix: *p.ReplacePrefixMatch, PrefixSet: true}
	}
	return nil
}

func timeouts(t *gwv1.HTTPRouteTimeouts, f *route.Filters) string {
	if t == nil {
		return ""
	}
	parse := func(d *gwv1.Duration) (time.Duration, string) {
		if d == nil {
			return 0, ""
		}
		v, err := time.ParseDuration(string(*d))
		if err != nil {
			return 0, errorf("timeout %q: %v", *d, err)
		}
		return v, ""
	}
	var why string
	if f.Timeout, why = parse(t.Request); why != "" {
		return why
	}
	f.BackendTimeout, why = parse(t.BackendRequest)
	return why
}

// backends resolves a rule's backendRefs; one that does not resolve keeps
// its weight and answers 500, and the route's ResolvedRefs says why.
// backendRef is a backendRef of either kind of route, its filters
// reduced to header changes.
type backendRef struct {
	gwv1.BackendRef
	requestHeaders, responseHeaders *gwv1.HTTPHeaderFilter
	unsupported                     string // a filter type that is not
}

func httpBackendRefs(refs []gwv1.HTTPBackendRef) []backendRef {
	var out []backendRef
	for _, r := range refs {
		br := backendRef{BackendRef: r.BackendRef}
		for _, f := range r.Filters {
			switch f.Type {
			case gwv1.HTTPRouteFilterRequestHeaderModifier:
				br.requestHeaders = f.RequestHeaderModifier
			case gwv1.HTTPRouteFilterResponseHeaderModifier:
				br.responseHeaders = f.ResponseHeaderModifier
			default:
				br.unsupported = string(f.Type)
			}
		}
		out = append(out, br)
	}
	return out
}

func mirrorFilters(fs []gwv1.HTTPRouteFilter) []*gwv1.HTTPRequestMirrorFilter {
	var out []*gwv1.HTTPRequestMirrorFilter
	for _, f := range fs {
		if f.Type == gwv1.HTTPRouteFilterRequestMirror && f.RequestMirror != nil {
			out = append(out, f.RequestMirror)
		}
	}
	return out
}

func (c *compiled) backends(r routeMeta, refs []backendRef, in Input) []route.WeightedBackend {
	var out []route.WeightedBackend
	for _, ref := range refs {
		wb := route.WeightedBackend{Weight: 1}
		if ref.Weight != nil {
			wb.Weight = *ref.Weight
		}
		fail := func(reason, msg string) {
			wb.Invalid = true
			c.unresolved(reason, msg)
		}
		b, reason, msg := resolveRef(r, ref.BackendObjectReference, in)
		if reason != "" {
			fail(reason, msg)
		} else {
			wb.Backend = b
			c.services = append(c.services, types.NamespacedName{Namespace: b.Namespace, Name: b.Service})
			if in.ServicePortName != nil {
				wb.TLS = in.backendCert.shownTo(in.policies.forBackend(b.Namespace, b.Service, in.ServicePortName(b.Namespace, b.Service, int32(b.Port))))
			}
		}
		wb.RequestHeaders, wb.ResponseHeaders = headerChanges(ref.requestHeaders), headerChanges(ref.responseHeaders)
		if ref.unsupported != "" {
			fail(string(gwv1.RouteReasonUnsupportedValue), errorf("backendRef %s: filter %s is not supported on a backend", ref.Name, ref.unsupported))
		}
		out = append(out, wb)
	}
	return out
}

func gatewayCORS(f *gwv1.HTTPCORSFilter) *route.GatewayCORS {
	c := &route.GatewayCORS{MaxAge: int(f.MaxAge), Credentials: f.AllowCredentials != nil && *f.AllowCredentials}
	for _, o := range f.AllowOrigins {
		c.Origins = append(c.Origins, string(o))
	}
	for _, m := range f.AllowMethods {
		c.Methods = append(c.Methods, string(m))
	}
	for _, h := range f.AllowHeaders {
		c.Headers = append(c.Headers, string(h))
	}
	for _, h := range f.ExposeHeaders {
		c.Expose = append(c.Expose, string(h))
	}
	return c
}

func (c *compiled) unresolved(reason, msg string) {
	if c.resolvedReason == "" {
		c.resolvedReason, c.resolvedMessage = reason, msg
	}
}

// resolveRef checks a Service reference of a route: its kind, a
// ReferenceGrant for another namespace, its port, that it exists; reason
// is "" when it resolves.
func resolveRef(r routeMeta, ref gwv1.BackendObjectReference, in Input) (route.Backend, string, string) {
	ns := r.namespace
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	switch {
	case (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Service"):
		return route.Backend{}, string(gwv1.RouteReasonInvalidKind), errorf("backendRef %s: only Services are supported", ref.Name)
	case ns != r.namespace && !granted(in.Grants, groupName, r.kind, r.namespace, "", "Service", ns, string(ref.Name)):
		return route.Backend{}, string(gwv1.RouteReasonRefNotPermitted), errorf("backendRef %s/%s: no ReferenceGrant in %s allows it", ns, ref.Name, ns)
	case ref.Port == nil:
		return route.Backend{}, string(gwv1.RouteReasonUnsupportedValue), errorf("backendRef %s: no port", ref.Name)
	case !in.ServiceExists(ns, string(ref.Name)):
		return route.Backend{}, string(gwv1.RouteReasonBackendNotFound), errorf("Service %s/%s not found", ns, ref.Name)
	}
	return route.Backend{Namespace: ns, Service: string(ref.Name), Port: *ref.Port}, "", ""
}

// mirrors compiles a rule's RequestMirror filters; one whose backend does
// not resolve is left out and reported.
func (c *compiled) mirrors(r routeMeta, fs []*gwv1.HTTPRequestMirrorFilter, in Input) []route.Mirror {
	var out []route.Mirror
	for _, m := range fs {
		b, reason, msg := resolveRef(r, m.BackendRef, in)
		if reason != "" {
			c.unresolved(reason, "mirror "+msg)
			continue
		}
		pct := 100.0
		switch {
		case m.Percent != nil:
			pct = float64(*m.Percent)
		case m.Fraction != nil:
			den := int32(100)
			if m.Fraction.Denominator != nil {
				den = *m.Fraction.Denominator
			}
			if den > 0 {
				pct = 100 * float64(m.Fraction.Numerator) / float64(den)
			}
		}
		out = append(out, route.Mirror{Backend: b, Percent: pct})
	}
	return out
}

func retry(r *gwv1.HTTPRouteRetry) *route.Retry {
	if r == nil {
		return nil
	}
	out := &route.Retry{Codes: map[int]bool{}, Attempts: 1}
	if r.Attempts != nil {
		out.Attempts = *r.Attempts
	}
	for _, code := range r.Codes {
		out.Codes[int(code)] = true
	}
	if r.Backoff != nil {
		out.Backoff, _ = time.ParseDuration(string(*r.Backoff))
	}
	return out
}
