package gateway

import (
	"regexp"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weft.dev/weft/internal/ingress/route"
)

func grpcMeta(r *gwv1.GRPCRoute) routeMeta {
	return routeMeta{kind: "GRPCRoute", namespace: r.Namespace, name: r.Name, generation: r.Generation, created: r.CreationTimestamp.Time,
		parents: r.Spec.ParentRefs, hostnames: r.Spec.Hostnames, obj: r}
}

// compileGRPC turns a GRPCRoute's rules into route-model rules: a gRPC
// call is an HTTP/2 POST to /<service>/<method>, so a method match is a
// path match (exact for service and method, prefix for a service alone,
// a regular expression otherwise), and the backends speak h2c.
func compileGRPC(r *gwv1.GRPCRoute, in Input) *compiled {
	c := &compiled{}
	m := grpcMeta(r)
	name := r.Namespace + "/" + r.Name
	for ri, rule := range r.Spec.Rules {
		filters, why := grpcFilters(rule.Filters)
		backends := c.backends(m, grpcBackendRefs(rule.BackendRefs), in)
		filters.Mirrors = c.mirrors(m, grpcMirrors(rule.Filters), in)
		if why != "" {
			c.dropped = append(c.dropped, errorf("rules[%d]: %s", ri, why))
			filters, backends = route.Filters{}, nil
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwv1.GRPCRouteMatch{{}}
		}
		for mi, gm := range matches {
			x := &route.Rule{Backends: backends, Filters: filters, Source: "GRPCRoute " + name, H2C: true,
				Rank: route.Rank{Created: r.CreationTimestamp.Time, Name: name, Index: ri*1024 + mi}}
			kind, path, err := grpcPath(gm.Method, x)
			for _, h := range gm.Headers {
				if err != "" {
					break
				}
				var vm route.ValueMatch
				vm, err = valueMatch(string(h.Name), h.Value, h.Type != nil && *h.Type == gwv1.GRPCHeaderMatchRegularExpression)
				x.Headers = append(x.Headers, vm)
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

// grpcPath is the path match of a method match; a regular expression or
// a method without a service becomes a condition on the rule.
func grpcPath(m *gwv1.GRPCMethodMatch, x *route.Rule) (route.PathKind, string, string) {
	if m == nil || (m.Service == nil && m.Method == nil) {
		return route.Prefix, "/", ""
	}
	svc, method := "", ""
	if m.Service != nil {
		svc = *m.Service
	}
	if m.Method != nil {
		method = *m.Method
	}
	regex := m.Type != nil && *m.Type == gwv1.GRPCMethodMatchRegularExpression
	switch {
	case !regex && svc != "" && method != "":
		return route.Exact, "/" + svc + "/" + method, ""
	case !regex && svc != "":
		return route.Prefix, "/" + svc, ""
	}
	svcRE, methodRE := "[^/]+", "[^/]+"
	if svc != "" {
		svcRE = svc
		if !regex {
			svcRE = regexp.QuoteMeta(svc)
		}
	}
	if method != "" {
		methodRE = method
		if !regex {
			methodRE = regexp.QuoteMeta(method)
		}
	}
	re, err := regexp.Compile("^/(" + svcRE + ")/(" + methodRE + ")$")
	if err != nil {
		return 0, "", errorf("method match: %v", err)
	}
	x.PathRegex = re
	return route.Prefix, "/", ""
}

func grpcFilters(fs []gwv1.GRPCRouteFilter) (route.Filters, string) {
	var out route.Filters
	for _, f := range fs {
		switch f.Type {
		case gwv1.GRPCRouteFilterRequestHeaderModifier:
			out.RequestHeaders = headerChanges(f.RequestHeaderModifier)
		case gwv1.GRPCRouteFilterResponseHeaderModifier:
			out.ResponseHeaders = headerChanges(f.ResponseHeaderModifier)
		case gwv1.GRPCRouteFilterRequestMirror:
		default:
			return out, errorf("filter %s is not supported", f.Type)
		}
	}
	return out, ""
}

func grpcMirrors(fs []gwv1.GRPCRouteFilter) []*gwv1.HTTPRequestMirrorFilter {
	var out []*gwv1.HTTPRequestMirrorFilter
	for _, f := range fs {
		if f.Type == gwv1.GRPCRouteFilterRequestMirror && f.RequestMirror != nil {
			out = append(out, f.RequestMirror)
		}
	}
	return out
}

func grpcBackendRefs(refs []gwv1.GRPCBackendRef) []backendRef {
	var out []backendRef
	for _, r := range refs {
		br := backendRef{BackendRef: r.BackendRef}
		for _, f := range r.Filters {
			switch f.Type {
			case gwv1.GRPCRouteFilterRequestHeaderModifier:
				br.requestHeaders = f.RequestHeaderModifier
			case gwv1.GRPCRouteFilterResponseHeaderModifier:
				br.responseHeaders = f.ResponseHeaderModifier
			default:
				br.unsupported = string(f.Type)
			}
		}
		out = append(out, br)
	}
	return out
}
