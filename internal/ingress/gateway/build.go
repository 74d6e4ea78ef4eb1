// Package gateway translates Gateway API objects (GatewayClass, Gateway,
// HTTPRoute, ReferenceGrant) into weft ingress's route model, one table per
// listener on the proxy port serving it, and computes every status the
// API asks for. Build is pure: the controller feeds it the informers'
// objects and writes what it returns.
package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weft.dev/weft/internal/ingress/proxy"
)

// ControllerName is what a GatewayClass names in spec.controllerName for
// weft to serve its Gateways.
const ControllerName = "weft.dev/gateway"

// Input is every object Build reads.
type Input struct {
	Classes    []*gwv1.GatewayClass
	Gateways   []*gwv1.Gateway
	HTTPRoutes []*gwv1.HTTPRoute
	GRPCRoutes []*gwv1.GRPCRoute
	TLSRoutes  []*gwv1.TLSRoute
	Grants     []*gwv1.ReferenceGrant
	// ListenerSets add listeners to Gateways that allow them.
	ListenerSets []*gwv1.ListenerSet
	// BackendTLSPolicies say which backends are reached over TLS.
	BackendTLSPolicies []*gwv1.BackendTLSPolicy
	// NamespaceLabels are each namespace's labels (allowedRoutes selectors).
	NamespaceLabels map[string]map[string]string
	// ServiceExists says whether a Service is there.
	ServiceExists func(namespace, name string) bool
	// ServicePortName is the name of a Service's port ("": none).
	ServicePortName func(namespace, name string, port int32) string
	// Secret loads a TLS Secret's certificate (nil, error: unusable).
	Secret func(namespace, name string) (*tls.Certificate, error)
	// CACerts loads the certificates of a ConfigMap's ca.crt.
	CACerts func(namespace, name string) ([]*x509.Certificate, error)
	// ProxyPorts is the proxy port serving each Gateway's listener port,
	// as the controller allocated them; Addresses each Gateway's
	// LoadBalancer addresses.
	ProxyPorts map[types.NamespacedName]map[int32]int
	Addresses  map[types.NamespacedName][]string

	// Memo, when set, keeps compiled routes from one Build to the next
	// while World is the same.
	Memo *Memo
	// World counts changes to everything a route's rules are compiled
	// from but the route itself: Services, ReferenceGrants, policies,
	// Secrets, ConfigMaps, Gateways.
	World uint64

	policies *backendPolicies // compiled by Build
	// backendCert is the client certificate the Gateway being compiled
	// for shows TLS backends (nil: none).
	backendCert *backendCert
}

// Result is the proxy's ports and every status to write.
type Result struct {
	Ports    map[int]*proxy.Port
	Classes  map[string][]metav1.Condition
	Gateways map[types.NamespacedName]*gwv1.GatewayStatus
	// Routes holds the parent statuses weft owns, per HTTPRoute.
	Routes map[RouteKey][]gwv1.RouteParentStatus
	// ListenerSets holds the statuses of the ListenerSets naming weft's Gateways.
	ListenerSets map[types.NamespacedName]gwv1.ListenerSetStatus
	// Policies holds the BackendTLSPolicies' ancestor statuses weft owns.
	Policies map[types.NamespacedName][]gwv1.PolicyAncestorStatus

	// serviceGateways: the Gateways whose routes send to each Service.
	serviceGateways map[types.NamespacedName]map[types.NamespacedName]bool
	// pending: the routes' attachments, until FinishStatuses.
	pending  []routeOutcome
	policies *backendPolicies
}

// Build translates the input.
func Build(in Input) *Result {
	res := BuildPorts(in)
	res.FinishStatuses()
	return res
}

// FinishStatuses makes the route and BackendTLSPolicy statuses of a
// BuildPorts result (Build does both).
func (res *Result) FinishStatuses() {
	res.finishRoutes()
	res.Policies = res.policies.statuses(res.serviceGateways)
}

// BuildPorts is Build up to the proxy's ports and the Gateways' and
// ListenerSets' statuses; the routes' statuses wait for FinishStatuses,
// so that a change reaches the proxy without waiting for thousands of
// unchanged routes' conditions.
func BuildPorts(in Input) *Result {
	res := &Result{Ports: map[int]*proxy.Port{}, Classes: map[string][]metav1.Condition{},
		Gateways: map[types.NamespacedName]*gwv1.GatewayStatus{}, Routes: map[RouteKey][]gwv1.RouteParentStatus{},
		serviceGateways: map[types.NamespacedName]map[types.NamespacedName]bool{}, ListenerSets: map[types.NamespacedName]gwv1.ListenerSetStatus{}}
	in.policies = compileBackendPolicies(in)
	in.Memo.begin(in.World)
	defer in.Memo.end()
	ours := map[string]bool{}
	for _, c := range in.Classes {
		if c.Spec.ControllerName != ControllerName {
			continue
		}
		ours[c.Name] = true
		res.Classes[c.Name] = []metav1.Condition{cond(string(gwv1.GatewayClassConditionStatusAccepted), true,
			string(gwv1.GatewayClassReasonAccepted), "weft serves this class", c.Generation)}
	}
	gws := map[types.NamespacedName]*gatewayState{}
	for _, g := range sortedGateways(in.Gateways) {
		if !ours[string(g.Spec.GatewayClassName)] {
			continue
		}
		key := types.NamespacedName{Namespace: g.Namespace, Name: g.Name}
		gws[key] = newGatewayState(g, in)
	}
	p := parents{gateways: gws, sets: attachListenerSets(gws, in)}
	res.pending = make([]routeOutcome, 0, len(in.HTTPRoutes)+len(in.GRPCRoutes)+len(in.TLSRoutes))
	// HTTP and gRPC routes in any order: a table orders their rules by
	// the API's precedence (route.Rank) whatever order they come in, and
	// sorting thousands of routes scattered in the heap costs a sync more
	// than compiling the changed ones.
	for _, r := range in.HTTPRoutes {
		attachRoute(httpMeta(r), func(in Input) *compiled { return compileRules(r, in) }, p, in, res)
	}
	for _, r := range in.GRPCRoutes {
		attachRoute(grpcMeta(r), func(in Input) *compiled { return compileGRPC(r, in) }, p, in, res)
	}
	for _, r := range sortedByAge(in.TLSRoutes) {
		attachRoute(tlsMeta(r), func(in Input) *compiled { return compileTLS(r, in) }, p, in, res)
	}
	for key, gs := range gws {
		res.Gateways[key] = gs.status(in.Addresses[key])
		gs.program(res.Ports)
	}
	for key, s := range p.sets {
		res.ListenerSets[key] = s.status(len(in.Addresses[types.NamespacedName{Namespace: s.gw.gw.Namespace, Name: s.gw.gw.Name}]) > 0)
	}
	res.policies = in.policies
	return res
}

func cond(typ string, ok bool, reason, msg string, gen int64) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen}
}

func sortedGateways(gs []*gwv1.Gateway) []*gwv1.Gateway {
	out := append([]*gwv1.Gateway(nil), gs...)
	sort.Slice(out, func(i, j int) bool { return out[i].Namespace+"/"+out[i].Name < out[j].Namespace+"/"+out[j].Name })
	return out
}

// Memo keeps each route's compiled rules between Builds. A route's rules
// depend on the route object and on the world (Services, grants,
// policies, certificates), never on other routes; so while the world is
// unchanged, an unchanged route object (the informer's, replaced on any
// change) compiles to the same rules, and only new or edited routes are
// compiled. At 5,000 routes this is most of a sync's time.
type Memo struct {
	world      uint64
	prev, next map[memoKey]*compiled
	// Hits and Misses: routes the last Build took from the memo and
	// compiled.
	Hits, Misses int
}

type memoKey struct {
	route any    // the route object
	cert  string // the parent's backend client certificate (backendCert.key)
}

func (m *Memo) begin(world uint64) {
	if m == nil {
		return
	}
	if m.world != world {
		clear(m.prev)
	}
	if m.next == nil {
		m.next = make(map[memoKey]*compiled, len(m.prev))
	}
	m.world = world
	m.Hits, m.Misses = 0, 0
}

// end keeps what this Build used: deleted and edited routes leave. The
// two maps take turns, so a sync allocates none.
func (m *Memo) end() {
	if m != nil {
		m.prev, m.next = m.next, m.prev
		clear(m.next)
	}
}

// compile returns route's rules as compiled for cert, compiling them
// only when the memo does not have them.
func (m *Memo) compile(route any, cert *backendCert, compile func() *compiled) *compiled {
	if m == nil {
		return compile()
	}
	k := memoKey{route: route}
	if cert != nil {
		k.cert = cert.key
	}
	c, ok := m.prev[k]
	if ok {
		m.Hits++
	} else {
		m.Misses++
		c = compile()
	}
	m.next[k] = c
	return c
}

// sortedByAge: oldest first, then by "namespace/name", the API's order
// for conflicts.
func sortedByAge[T metav1.Object](rs []T) []T {
	out := append([]T(nil), rs...)
	slices.SortFunc(out, func(a, b T) int {
		ta, tb := a.GetCreationTimestamp(), b.GetCreationTimestamp()
		if !ta.Equal(&tb) {
			return ta.Compare(tb.Time)
		}
		return compareNamespacedNames(a.GetNamespace(), a.GetName(), b.GetNamespace(), b.GetName())
	})
	return out
}

// compareNamespacedNames compares "ans/an" with "bns/bn" without building
// them (sorting thousands of routes would otherwise allocate per compare).
func compareNamespacedNames(ans, an, bns, bn string) int {
	if ans == bns {
		return strings.Compare(an, bn)
	}
	at := func(ns, name string, i int) byte {
		switch {
		case i < len(ns):
			return ns[i]
		case i == len(ns):
			return '/'
		}
		return name[i-len(ns)-1]
	}
	la, lb := len(ans)+1+len(an), len(bns)+1+len(bn)
	for i := 0; i < la && i < lb; i++ {
		if ca, cb := at(ans, an, i), at(bns, bn, i); ca != cb {
			return int(ca) - int(cb)
		}
	}
	return la - lb
}

// program adds the Gateway's programmed listeners to the proxy's ports.
func (gs *gatewayState) program(ports map[int]*proxy.Port) {
	if gs.problem != "" {
		return // not accepted: serves nothing
	}
	for _, l := range gs.allListeners() {
		if !l.programmed() {
			continue
		}
		pp := gs.proxyPorts[int32(l.spec.Port)]
		pt := ports[pp]
		if pt != nil && (pt.TLS != (l.spec.Protocol == gwv1.HTTPSProtocolType) || pt.Stream != (l.spec.Protocol == gwv1.TLSProtocolType)) {
			continue // the port serves another protocol (two Gateways given one port): never mix them
		}
		if pt == nil {
			pt = &proxy.Port{TLS: l.spec.Protocol == gwv1.HTTPSProtocolType, Stream: l.spec.Protocol == gwv1.TLSProtocolType,
				Certs: map[string]*tls.Certificate{}}
			ports[pp] = pt
		}
		pt.Hostnames = append(pt.Hostnames, l.hostname)
		pt.Tables = append(pt.Tables, l.table)
		pt.Terminate = append(pt.Terminate, l.terminates())
		if l.cert != nil {
			pt.Certs[l.hostname] = l.cert
		}
		if l.clientCAs != nil {
			pt.ClientCAs, pt.ClientCertOptional = l.clientCAs, l.clientCertOptional
		}
	}
}

func nsName(r *gwv1.HTTPRoute) string { return r.Namespace + "/" + r.Name }

func errorf(format string, a ...any) string { return fmt.Sprintf(format, a...) }
