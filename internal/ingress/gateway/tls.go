package gateway

import (
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weft.dev/weft/internal/ingress/route"
)

func tlsMeta(r *gwv1.TLSRoute) routeMeta {
	return routeMeta{kind: "TLSRoute", namespace: r.Namespace, name: r.Name, generation: r.Generation, created: r.CreationTimestamp.Time,
		parents: r.Spec.ParentRefs, hostnames: r.Spec.Hostnames, obj: r}
}

// compileTLS: a TLSRoute's connections are chosen by server name alone,
// so its rules (the first with backends serves) sit on "/" of each of its
// hostnames; the proxy passes the connection through to a backend.
func compileTLS(r *gwv1.TLSRoute, in Input) *compiled {
	c := &compiled{}
	m := tlsMeta(r)
	name := r.Namespace + "/" + r.Name
	for ri, rule := range r.Spec.Rules {
		var refs []backendRef
		for _, b := range rule.BackendRefs {
			refs = append(refs, backendRef{BackendRef: b})
		}
		x := &route.Rule{Backends: c.backends(m, refs, in), Source: "TLSRoute " + name,
			Rank: route.Rank{Created: r.CreationTimestamp.Time, Name: name, Index: ri * 1024}}
		c.paths = append(c.paths, pathRule{kind: route.Prefix, path: "/", rule: x})
	}
	return c
}
