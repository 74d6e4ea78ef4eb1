package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weft.dev/weft/internal/ingress/route"
)

const groupName = gwv1.Group(gwv1.GroupName)

// gatewayState is one Gateway of weft's classes while Build runs.
type gatewayState struct {
	gw         *gwv1.Gateway
	listeners  []*listenerState
	proxyPorts map[int32]int
	problem    string // why the Gateway is not accepted ("": it is)
	reason     string // the Accepted condition's reason when not
	// backendCert: shown to TLS backends; backendRefReason: why its
	// reference did not resolve (backendRefsChecked: it has one).
	backendCert                         *backendCert
	backendRefsChecked                  bool
	backendRefReason, backendRefMessage string
	// sets are the ListenerSets naming the Gateway, in precedence order.
	sets []*listenerSetState
}

// listenerState is one listener: its validity, the routes attached and
// their table.
type listenerState struct {
	spec     gwv1.Listener
	hostname string
	kinds    []gwv1.RouteGroupKind
	// Conditions, each as (ok, reason, message); accepted false means the
	// listener serves nothing.
	accepted, resolved, conflicted bool
	reason, message                string
	// refReason: ResolvedRefs' reason when a CA reference failed while
	// Accepted carries its own.
	refReason, refMessage string
	attached              int32
	table                 *route.Table
	cert                  *tls.Certificate
	proxyPort             int
	// owner is the object the listener is written in (the Gateway, or a
	// ListenerSet): its namespace is the routes' "Same" and its kind is
	// what ReferenceGrants name.
	ownerKind, ownerNS string
	// setConflict: a ListenerSet's listener that conflicts with one that
	// takes precedence (reason in reason).
	setConflict bool
	// clientCAs: clients must show a certificate they sign (optional:
	// may show none or another, AllowInsecureFallback).
	clientCAs          *x509.CertPool
	clientCertOptional bool
}

func (l *listenerState) programmed() bool {
	return l.accepted && l.resolved && !l.conflicted && l.proxyPort != 0
}

func newGatewayState(g *gwv1.Gateway, in Input) *gatewayState {
	key := types.NamespacedName{Namespace: g.Namespace, Name: g.Name}
	gs := &gatewayState{gw: g, proxyPorts: in.ProxyPorts[key]}
	for _, a := range g.Spec.Addresses {
		if a.Type != nil && *a.Type != gwv1.IPAddressType {
			gs.problem, gs.reason = errorf("address type %s is not supported (only IPAddress)", *a.Type), string(gwv1.GatewayReasonUnsupportedAddress)
		}
	}
	if inf := g.Spec.Infrastructure; inf != nil && inf.ParametersRef != nil {
		// weft has no parameters resource: any reference is one it cannot resolve.
		gs.problem, gs.reason = errorf("parametersRef %s %s: weft takes no parameters", inf.ParametersRef.Kind, inf.ParametersRef.Name), string(gwv1.GatewayReasonInvalidParameters)
	}
	for _, spec := range g.Spec.Listeners {
		l := &listenerState{spec: spec, accepted: true, resolved: true, table: route.NewTable(), ownerKind: "Gateway", ownerNS: g.Namespace}
		l.table.DeepWildcards = true
		if spec.Hostname != nil {
			l.hostname = strings.ToLower(string(*spec.Hostname))
		}
		l.proxyPort = gs.proxyPorts[spec.Port]
		l.check(g, in)
		gs.listeners = append(gs.listeners, l)
	}
	gs.findConflicts()
	gs.loadBackendCert(in)
	return gs
}

// check validates a listener's protocol, route kinds and certificates.
func (l *listenerState) check(g *gwv1.Gateway, in Input) {
	kinds := []gwv1.Kind{"HTTPRoute", "GRPCRoute"}
	switch l.spec.Protocol {
	case gwv1.HTTPProtocolType, gwv1.HTTPSProtocolType:
	case gwv1.TLSProtocolType:
		kinds = []gwv1.Kind{"TLSRoute"}
	default:
		l.accepted, l.reason, l.message = false, string(gwv1.ListenerReasonUnsupportedProtocol), errorf("protocol %s is not supported", l.spec.Protocol)
		return
	}
	l.kinds = nil
	for _, k := range kinds {
		l.kinds = append(l.kinds, gwv1.RouteGroupKind{Group: ptr(groupName), Kind: k})
	}
	if ar := l.spec.AllowedRoutes; ar != nil && len(ar.Kinds) > 0 {
		l.kinds = nil
		for _, k := range ar.Kinds {
			if (k.Group == nil || *k.Group == groupName) && slices.Contains(kinds, k.Kind) {
				l.kinds = append(l.kinds, gwv1.RouteGroupKind{Group: ptr(groupName), Kind: k.Kind})
			} else {
				l.resolved, l.reason, l.message = false, string(gwv1.ListenerReasonInvalidRouteKinds), errorf("route kind %s is not supported on a %s listener", k.Kind, l.spec.Protocol)
			}
		}
	}
	if l.terminates() && l.resolved {
		l.loadCert(g, in)
	}
	if l.spec.Protocol == gwv1.HTTPSProtocolType && l.resolved {
		l.loadClientCAs(g, in)
	}
}

// terminates: the listener decrypts TLS (HTTPS, or TLS whose mode is
// Terminate, the API's default) and needs a certificate.
func (l *listenerState) terminates() bool {
	switch l.spec.Protocol {
	case gwv1.HTTPSProtocolType:
		return true
	case gwv1.TLSProtocolType:
		return l.spec.TLS == nil || l.spec.TLS.Mode == nil || *l.spec.TLS.Mode == gwv1.TLSModeTerminate
	}
	return false
}

// loadCert takes the listener's first certificate reference: a Secret in
// the Gateway's namespace, or in another one a ReferenceGrant allows.
func (l *listenerState) loadCert(g *gwv1.Gateway, in Input) {
	t := l.spec.TLS
	if t == nil || (t.Mode != nil && *t.Mode != gwv1.TLSModeTerminate) || len(t.CertificateRefs) == 0 {
		l.resolved, l.reason, l.message = false, string(gwv1.ListenerReasonInvalidCertificateRef), "terminating TLS needs tls.mode Terminate and a certificateRef"
		return
	}
	ref := t.CertificateRefs[0]
	ns := l.ownerNS
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	switch {
	case (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Secret"):
		l.resolved, l.reason, l.message = false, string(gwv1.ListenerReasonInvalidCertificateRef), "certificateRefs[0] is not a Secret"
	case ns != l.ownerNS && !granted(in.Grants, groupName, l.ownerKind, l.ownerNS, "", "Secret", ns, string(ref.Name)):
		l.resolved, l.reason, l.message = false, string(gwv1.ListenerReasonRefNotPermitted), errorf("no ReferenceGrant in %s allows this Gateway's Secret %s", ns, ref.Name)
	default:
		cert, err := in.Secret(ns, string(ref.Name))
		if err != nil {
			l.resolved, l.reason, l.message = false, string(gwv1.ListenerReasonInvalidCertificateRef), errorf("Secret %s/%s: %v", ns, ref.Name, err)
			return
		}
		l.cert = cert
	}
}

// findConflicts marks listeners sharing a port with another protocol
// (ProtocolConflict) or the same protocol and hostname (HostnameConflict).
func (gs *gatewayState) findConflicts() {
	for i, a := range gs.listeners {
		for j, b := range gs.listeners {
			if i == j || a.spec.Port != b.spec.Port {
				continue
			}
			switch {
			case a.spec.Protocol != b.spec.Protocol:
				a.conflicted, a.reason = true, string(gwv1.ListenerReasonProtocolConflict)
			case a.hostname == b.hostname && !a.conflicted:
				a.conflicted, a.reason = true, string(gwv1.ListenerReasonHostnameConflict)
			}
		}
	}
}

// allows: a route of this kind and namespace may attach.
func (l *listenerState) allows(kind, ns string, nsLabels map[string]map[string]string) bool {
	kindOK := false
	for _, k := range l.kinds {
		kindOK = kindOK || string(k.Kind) == kind
	}
	if !kindOK {
		return false
	}
	from := gwv1.NamespacesFromSame
	var sel *metav1.LabelSelector
	if ar := l.spec.AllowedRoutes; ar != nil && ar.Namespaces != nil {
		if ar.Namespaces.From != nil {
			from = *ar.Namespaces.From
		}
		sel = ar.Namespaces.Selector
	}
	switch from {
	case gwv1.NamespacesFromAll:
		return true
	case gwv1.NamespacesFromSelector:
		s, err := metav1.LabelSelectorAsSelector(sel)
		return err == nil && sel != nil && s.Matches(labels.Set(nsLabels[ns]))
	}
	return ns == l.ownerNS
}

// status is the Gateway's status: conditions, addresses, listeners.
func (gs *gatewayState) status(addrs []string) *gwv1.GatewayStatus {
	gen := gs.gw.Generation
	st := &gwv1.GatewayStatus{}
	for _, a := range addrs {
		st.Addresses = append(st.Addresses, gwv1.GatewayStatusAddress{Type: ptr(gwv1.IPAddressType), Value: a})
	}
	st.AttachedListenerSets = ptr(gs.attachedSets())
	valid, programmed := 0, 0
	for _, l := range gs.listeners {
		ls := gwv1.ListenerStatus{Name: l.spec.Name, SupportedKinds: l.kinds, AttachedRoutes: l.attached}
		if ls.SupportedKinds == nil {
			ls.SupportedKinds = []gwv1.RouteGroupKind{}
		}
		ls.Conditions = l.conditions(gen, len(addrs) > 0)
		if l.accepted && !l.conflicted {
			valid++
		}
		if l.programmed() && len(addrs) > 0 {
			programmed++
		}
		st.Listeners = append(st.Listeners, ls)
	}
	switch {
	case gs.problem != "":
		st.Conditions = append(st.Conditions, cond("Accepted", false, gs.reason, gs.problem, gen))
	case valid == len(gs.listeners):
		st.Conditions = append(st.Conditions, cond("Accepted", true, string(gwv1.GatewayReasonAccepted), "weft serves this Gateway", gen))
	default:
		st.Conditions = append(st.Conditions, cond("Accepted", valid > 0, string(gwv1.GatewayReasonListenersNotValid), "some listeners are not valid", gen))
	}
	if gs.backendRefsChecked {
		st.Conditions = append(st.Conditions, cond(string(gwv1.GatewayConditionResolvedRefs), gs.backendRefReason == "",
			firstOf(gs.backendRefReason, string(gwv1.GatewayReasonResolvedRefs)), gs.backendRefMessage, gen))
	}
	if insecureFallback(gs.gw) {
		st.Conditions = append(st.Conditions, cond(string(gwv1.GatewayConditionInsecureFrontendValidationMode), true,
			string(gwv1.GatewayReasonConfigurationChanged), "clients without a valid certificate are let in (AllowInsecureFallback)", gen))
	}
	switch {
	case gs.problem != "":
		st.Conditions = append(st.Conditions, cond("Programmed", false, string(gwv1.GatewayReasonInvalid), gs.problem, gen))
	case staticAddressProblem(gs.gw, addrs) != "":
		st.Conditions = append(st.Conditions, cond("Programmed", false, string(gwv1.GatewayReasonAddressNotUsable), staticAddressProblem(gs.gw, addrs), gen))
	case len(addrs) == 0:
		st.Conditions = append(st.Conditions, cond("Programmed", false, string(gwv1.GatewayReasonAddressNotAssigned), "waiting for the LoadBalancer Service's address", gen))
	default:
		st.Conditions = append(st.Conditions, cond("Programmed", true, string(gwv1.GatewayReasonProgrammed), errorf("%d of %d listeners programmed", programmed, len(gs.listeners)), gen))
	}
	return st
}

func (l *listenerState) conditions(gen int64, addressed bool) []metav1.Condition {
	accepted := cond("Accepted", l.accepted, string(gwv1.ListenerReasonAccepted), "", gen)
	resolved := cond("ResolvedRefs", l.resolved, string(gwv1.ListenerReasonResolvedRefs), "", gen)
	conflicted := cond("Conflicted", l.conflicted, string(gwv1.ListenerReasonNoConflicts), "", gen)
	switch {
	case !l.accepted:
		accepted.Reason, accepted.Message = l.reason, l.message
	case !l.resolved:
		resolved.Reason, resolved.Message = l.reason, l.message
	case l.conflicted:
		conflicted.Reason, conflicted.Message = l.reason, "another listener on this port conflicts"
	}
	if !l.resolved && l.refReason != "" {
		resolved.Reason, resolved.Message = l.refReason, l.refMessage
	}
	programmed := cond("Programmed", l.programmed() && addressed, string(gwv1.ListenerReasonProgrammed), "", gen)
	if programmed.Status == metav1.ConditionFalse {
		programmed.Reason = string(gwv1.ListenerReasonInvalid)
		if l.accepted && l.resolved && !l.conflicted {
			programmed.Reason = string(gwv1.ListenerReasonPending)
		}
	}
	if l.setConflict {
		conflicted = cond("Conflicted", true, l.reason, l.message, gen)
		programmed.Reason = l.reason
	}
	return []metav1.Condition{accepted, resolved, conflicted, programmed}
}

// granted: a ReferenceGrant in toNS lets objects of (fromGroup, fromKind)
// in fromNS refer to (toGroup, toKind) named name (every name when the
// grant names none).
func granted(grants []*gwv1.ReferenceGrant, fromGroup gwv1.Group, fromKind, fromNS string, toGroup gwv1.Group, toKind, toNS, name string) bool {
	for _, g := range grants {
		if g.Namespace != toNS {
			continue
		}
		from := false
		for _, f := range g.Spec.From {
			from = from || (f.Group == fromGroup && string(f.Kind) == fromKind && string(f.Namespace) == fromNS)
		}
		if !from {
			continue
		}
		for _, t := range g.Spec.To {
			if t.Group == toGroup && string(t.Kind) == toKind && (t.Name == nil || string(*t.Name) == name) {
				return true
			}
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }

// firstOf is the first non-empty string.
func firstOf(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
