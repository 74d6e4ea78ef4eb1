package gateway

import (
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weft.dev/weft/internal/ingress/route"
)

// listenerSetState is a ListenerSet naming a Gateway of weft's: whether
// the Gateway takes it, and its listeners.
type listenerSetState struct {
	ls        *gwv1.ListenerSet
	gw        *gatewayState
	allowed   bool
	listeners []*listenerState
}

// accepted: the Gateway takes the set and one of its listeners is valid.
func (s *listenerSetState) accepted() bool {
	if !s.allowed || s.gw.problem != "" {
		return false
	}
	for _, l := range s.listeners {
		if l.accepted && l.resolved && !l.conflicted {
			return true // a listener that can serve
		}
	}
	return false
}

// parents are the objects routes attach to: Gateways and ListenerSets.
type parents struct {
	gateways map[types.NamespacedName]*gatewayState
	sets     map[types.NamespacedName]*listenerSetState
}

// of is the parent a route's parentRef names, as the Gateway and, for a
// ListenerSet, the set (nil, nil: not one of weft's).
func (p parents) of(routeNS string, ref gwv1.ParentReference) (*gatewayState, *listenerSetState) {
	if ref.Group != nil && *ref.Group != groupName {
		return nil, nil
	}
	ns := routeNS
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	key := types.NamespacedName{Namespace: ns, Name: string(ref.Name)}
	switch {
	case ref.Kind == nil || *ref.Kind == "Gateway":
		return p.gateways[key], nil
	case *ref.Kind == "ListenerSet":
		if s := p.sets[key]; s != nil {
			return s.gw, s
		}
	}
	return nil, nil
}

// allListeners are the Gateway's own listeners and those of the
// ListenerSets it takes.
func (gs *gatewayState) allListeners() []*listenerState {
	out := append([]*listenerState(nil), gs.listeners...)
	for _, s := range gs.sets {
		if s.allowed {
			out = append(out, s.listeners...)
		}
	}
	return out
}

// attachedSets is how many ListenerSets the Gateway has accepted.
func (gs *gatewayState) attachedSets() int32 {
	n := int32(0)
	for _, s := range gs.sets {
		if s.accepted() {
			n++
		}
	}
	return n
}

// parentGateway is the Gateway a ListenerSet names.
func parentGateway(ls *gwv1.ListenerSet) (types.NamespacedName, bool) {
	p := ls.Spec.ParentRef
	if (p.Group != nil && *p.Group != groupName) || (p.Kind != nil && *p.Kind != "Gateway") {
		return types.NamespacedName{}, false
	}
	ns := ls.Namespace
	if p.Namespace != nil {
		ns = string(*p.Namespace)
	}
	return types.NamespacedName{Namespace: ns, Name: string(p.Name)}, true
}

// attachListenerSets adds each ListenerSet to the Gateway it names, oldest
// first (then by namespace/name): its listeners join the Gateway's, after
// the Gateway's own and every older set's, and lose to them on conflict.
func attachListenerSets(gws map[types.NamespacedName]*gatewayState, in Input) map[types.NamespacedName]*listenerSetState {
	out := map[types.NamespacedName]*listenerSetState{}
	sets := append([]*gwv1.ListenerSet(nil), in.ListenerSets...)
	sort.Slice(sets, func(i, j int) bool {
		a, b := sets[i], sets[j]
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	for _, ls := range sets {
		key, ok := parentGateway(ls)
		gs := gws[key]
		if !ok || gs == nil {
			continue // not a Gateway of weft's
		}
		s := &listenerSetState{ls: ls, gw: gs, allowed: gs.allowsListenerSet(ls.Namespace, in.NamespaceLabels)}
		for _, e := range ls.Spec.Listeners {
			spec := gwv1.Listener{Name: e.Name, Hostname: e.Hostname, Port: e.Port, Protocol: e.Protocol, TLS: e.TLS, AllowedRoutes: e.AllowedRoutes}
			l := &listenerState{spec: spec, accepted: true, resolved: true, table: route.NewTable(), ownerKind: "ListenerSet", ownerNS: ls.Namespace}
			l.table.DeepWildcards = true
			if spec.Hostname != nil {
				l.hostname = strings.ToLower(string(*spec.Hostname))
			}
			l.proxyPort = gs.proxyPorts[spec.Port]
			l.check(gs.gw, in)
			if s.allowed {
				conflictWithEarlier(l, append(gs.allListeners(), s.listeners...))
			}
			s.listeners = append(s.listeners, l)
		}
		gs.sets = append(gs.sets, s)
		out[types.NamespacedName{Namespace: ls.Namespace, Name: ls.Name}] = s
	}
	return out
}

// allowsListenerSet: the Gateway's allowedListeners takes ListenerSets
// from this namespace (none unless it says so).
func (gs *gatewayState) allowsListenerSet(ns string, nsLabels map[string]map[string]string) bool {
	al := gs.gw.Spec.AllowedListeners
	if al == nil || al.Namespaces == nil || al.Namespaces.From == nil {
		return false
	}
	switch *al.Namespaces.From {
	case gwv1.NamespacesFromAll:
		return true
	case gwv1.NamespacesFromSame:
		return ns == gs.gw.Namespace
	case gwv1.NamespacesFromSelector:
		s, err := metav1.LabelSelectorAsSelector(al.Namespaces.Selector)
		return err == nil && al.Namespaces.Selector != nil && s.Matches(labels.Set(nsLabels[ns]))
	}
	return false
}

// conflictWithEarlier marks a ListenerSet's listener that shares a port
// with a listener taking precedence (earlier): another protocol, or the
// same hostname.
func conflictWithEarlier(l *listenerState, earlier []*listenerState) {
	for _, e := range earlier {
		if !e.accepted || e.conflicted || e.spec.Port != l.spec.Port {
			continue
		}
		reason := ""
		switch {
		case e.spec.Protocol != l.spec.Protocol:
			reason = string(gwv1.ListenerReasonProtocolConflict)
		case e.hostname == l.hostname:
			reason = string(gwv1.ListenerReasonHostnameConflict)
		default:
			continue
		}
		l.accepted, l.conflicted, l.setConflict = false, true, true
		l.reason, l.message = reason, errorf("listener %s on port %d takes precedence", e.spec.Name, e.spec.Port)
		return
	}
}

// status is the ListenerSet's status.
func (s *listenerSetState) status(addressed bool) gwv1.ListenerSetStatus {
	gen := s.ls.Generation
	st := gwv1.ListenerSetStatus{}
	reason, msg := string(gwv1.ListenerSetReasonAccepted), "its listeners are the Gateway's"
	switch {
	case !s.allowed:
		reason, msg = string(gwv1.ListenerSetReasonNotAllowed), "the Gateway's allowedListeners does not take ListenerSets from this namespace"
	case s.gw.problem != "":
		reason, msg = string(gwv1.ListenerSetReasonParentNotAccepted), "the Gateway is not accepted"
	case !s.accepted():
		reason, msg = string(gwv1.ListenerSetReasonListenersNotValid), "no listener is valid"
	}
	st.Conditions = append(st.Conditions, cond(string(gwv1.ListenerSetConditionAccepted), s.accepted(), reason, msg, gen))
	programmed, preason := s.accepted() && addressed, string(gwv1.ListenerSetReasonProgrammed)
	if !s.accepted() {
		preason = reason
	} else if !addressed {
		preason, msg = string(gwv1.ListenerSetReasonPending), "waiting for the Gateway's address"
	}
	st.Conditions = append(st.Conditions, cond(string(gwv1.ListenerSetConditionProgrammed), programmed, preason, msg, gen))
	if !s.allowed {
		return st
	}
	for _, l := range s.listeners {
		e := gwv1.ListenerEntryStatus{Name: l.spec.Name, SupportedKinds: l.kinds, AttachedRoutes: l.attached, Conditions: l.conditions(gen, addressed)}
		if e.SupportedKinds == nil {
			e.SupportedKinds = []gwv1.RouteGroupKind{}
		}
		st.Listeners = append(st.Listeners, e)
	}
	return st
}

// listenerSetPorts are the ports the ListenerSets naming each Gateway
// listen on (the Gateway's Service carries them, taken or not).
func listenerSetPorts(in Input) map[types.NamespacedName][]int32 {
	out := map[types.NamespacedName][]int32{}
	for _, ls := range in.ListenerSets {
		key, ok := parentGateway(ls)
		if !ok {
			continue
		}
		for _, l := range ls.Spec.Listeners {
			out[key] = append(out[key], l.Port)
		}
	}
	return out
}
