package gateway

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weft.dev/weft/internal/ingress/route"
)

// policyTarget is a Service (port, by name; "": all its ports) a
// BackendTLSPolicy targets.
type policyTarget struct{ namespace, service, section string }

// backendPolicy is one BackendTLSPolicy while Build runs.
type backendPolicy struct {
	p   *gwv1.BackendTLSPolicy
	tls *route.UpstreamTLS
	// conflicted: an older policy targets one of the same ports.
	conflicted bool
	// refReason: why a CA reference did not resolve ("": all did).
	refReason, refMessage string
}

// backendPolicies are the BackendTLSPolicies by the Service ports they
// target: the oldest policy for a port wins, the others are Conflicted.
type backendPolicies struct {
	byTarget map[policyTarget]*backendPolicy
	all      []*backendPolicy
}

func compileBackendPolicies(in Input) *backendPolicies {
	ps := &backendPolicies{byTarget: map[policyTarget]*backendPolicy{}}
	sorted := append([]*gwv1.BackendTLSPolicy(nil), in.BackendTLSPolicies...)
	sort.Slice(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	for _, p := range sorted {
		bp := &backendPolicy{p: p, tls: upstreamTLS(p, in)}
		if bp.tls.Invalid {
			bp.refReason, bp.refMessage = caProblem(p, in)
		}
		var mine []policyTarget
		for _, t := range p.Spec.TargetRefs {
			if t.Group != "" || t.Kind != "Service" {
				continue
			}
			key := policyTarget{namespace: p.Namespace, service: string(t.Name)}
			if t.SectionName != nil {
				key.section = string(*t.SectionName)
			}
			if ps.byTarget[key] != nil {
				bp.conflicted = true
				continue
			}
			mine = append(mine, key)
		}
		if !bp.conflicted {
			for _, key := range mine {
				ps.byTarget[key] = bp
			}
		}
		ps.all = append(ps.all, bp)
	}
	return ps
}

// forBackend is the TLS a Service port is reached with: the policy naming
// the port, else the one naming the whole Service (nil: none).
func (ps *backendPolicies) forBackend(ns, svc, portName string) *route.UpstreamTLS {
	if ps == nil {
		return nil
	}
	if portName != "" {
		if bp := ps.byTarget[policyTarget{ns, svc, portName}]; bp != nil {
			return bp.tls
		}
	}
	if bp := ps.byTarget[policyTarget{ns, svc, ""}]; bp != nil {
		return bp.tls
	}
	return nil
}

// upstreamTLS is what a policy asks of its backends' certificates.
func upstreamTLS(p *gwv1.BackendTLSPolicy, in Input) *route.UpstreamTLS {
	v := p.Spec.Validation
	u := &route.UpstreamTLS{ServerName: string(v.Hostname)}
	for _, san := range v.SubjectAltNames {
		switch san.Type {
		case gwv1.HostnameSubjectAltNameType:
			u.SANs = append(u.SANs, strings.ToLower(string(san.Hostname)))
		case gwv1.URISubjectAltNameType:
			u.URIs = append(u.URIs, string(san.URI))
		}
	}
	h := sha256.New()
	h.Write([]byte(strings.Join([]string{u.ServerName, strings.Join(u.SANs, ","), strings.Join(u.URIs, ",")}, "|")))
	if len(v.CACertificateRefs) > 0 {
		u.Roots = x509.NewCertPool()
		for _, ref := range v.CACertificateRefs {
			if ref.Group != "" || ref.Kind != "ConfigMap" || in.CACerts == nil {
				u.Invalid = true
				continue
			}
			certs, err := in.CACerts(p.Namespace, string(ref.Name))
			if err != nil {
				u.Invalid = true
				continue
			}
			for _, c := range certs {
				u.Roots.AddCert(c)
				h.Write(c.Raw)
			}
		}
	} else if v.WellKnownCACertificates == nil || *v.WellKnownCACertificates != gwv1.WellKnownCACertificatesSystem {
		u.Invalid = true
	}
	u.Key = hex.EncodeToString(h.Sum(nil))
	return u
}

// caProblem is the ResolvedRefs reason and message of a policy whose CA
// references do not all resolve.
func caProblem(p *gwv1.BackendTLSPolicy, in Input) (string, string) {
	v := p.Spec.Validation
	if len(v.CACertificateRefs) == 0 {
		return string(gwv1.BackendTLSPolicyReasonInvalidCACertificateRef), "wellKnownCACertificates: only System is supported"
	}
	for _, ref := range v.CACertificateRefs {
		if ref.Group != "" || ref.Kind != "ConfigMap" {
			return string(gwv1.BackendTLSPolicyReasonInvalidKind), errorf("caCertificateRef %s %s: only ConfigMaps are supported", ref.Kind, ref.Name)
		}
		if in.CACerts == nil {
			return string(gwv1.BackendTLSPolicyReasonInvalidCACertificateRef), "no ConfigMaps are read"
		}
		if _, err := in.CACerts(p.Namespace, string(ref.Name)); err != nil {
			return string(gwv1.BackendTLSPolicyReasonInvalidCACertificateRef), errorf("ConfigMap %s/%s: %v", p.Namespace, ref.Name, err)
		}
	}
	return "", ""
}

// policyStatuses are the policies' statuses: one ancestor per Gateway of
// weft's whose routes send to a Service the policy targets.
func (ps *backendPolicies) statuses(serviceGateways map[types.NamespacedName]map[types.NamespacedName]bool) map[types.NamespacedName][]gwv1.PolicyAncestorStatus {
	out := map[types.NamespacedName][]gwv1.PolicyAncestorStatus{}
	for _, bp := range ps.all {
		gws := map[types.NamespacedName]bool{}
		for _, t := range bp.p.Spec.TargetRefs {
			for gw := range serviceGateways[types.NamespacedName{Namespace: bp.p.Namespace, Name: string(t.Name)}] {
				gws[gw] = true
			}
		}
		keys := make([]types.NamespacedName, 0, len(gws))
		for k := range gws {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		key := types.NamespacedName{Namespace: bp.p.Namespace, Name: bp.p.Name}
		out[key] = []gwv1.PolicyAncestorStatus{}
		for _, gw := range keys {
			out[key] = append(out[key], gwv1.PolicyAncestorStatus{
				AncestorRef:    gwv1.ParentReference{Group: ptr(groupName), Kind: ptr(gwv1.Kind("Gateway")), Namespace: ptr(gwv1.Namespace(gw.Namespace)), Name: gwv1.ObjectName(gw.Name)},
				ControllerName: ControllerName, Conditions: bp.conditions()})
		}
	}
	return out
}

func (bp *backendPolicy) conditions() []metav1.Condition {
	gen := bp.p.Generation
	accepted := cond(string(gwv1.PolicyConditionAccepted), true, string(gwv1.PolicyReasonAccepted), "weft checks the backends' certificates", gen)
	resolved := cond(string(gwv1.BackendTLSPolicyConditionResolvedRefs), true, string(gwv1.BackendTLSPolicyReasonResolvedRefs), "", gen)
	switch {
	case bp.conflicted:
		accepted = cond(string(gwv1.PolicyConditionAccepted), false, string(gwv1.PolicyReasonConflicted), "an older BackendTLSPolicy targets the same Service port", gen)
	case bp.refReason != "":
		accepted = cond(string(gwv1.PolicyConditionAccepted), false, string(gwv1.BackendTLSPolicyReasonNoValidCACertificate), "requests to its backends are answered 500", gen)
	}
	if bp.refReason != "" {
		resolved = cond(string(gwv1.BackendTLSPolicyConditionResolvedRefs), false, bp.refReason, bp.refMessage, gen)
	}
	return []metav1.Condition{accepted, resolved}
}

// backendCert is a Gateway's client certificate for TLS backends
// (spec.tls.backend.clientCertificateRef).
type backendCert struct {
	cert *tls.Certificate
	key  string // its fingerprint, part of the transports' keys
}

// shownTo is u with the certificate shown to the backend (u itself when
// there is no certificate or no TLS).
func (bc *backendCert) shownTo(u *route.UpstreamTLS) *route.UpstreamTLS {
	if bc == nil || u == nil {
		return u
	}
	withCert := *u
	withCert.ClientCert, withCert.Key = bc.cert, u.Key+"|client:"+bc.key
	return &withCert
}

// loadBackendCert resolves the Gateway's client certificate for TLS
// backends; a reference that does not resolve is the Gateway's
// ResolvedRefs condition.
func (gs *gatewayState) loadBackendCert(in Input) {
	t := gs.gw.Spec.TLS
	if t == nil || t.Backend == nil || t.Backend.ClientCertificateRef == nil {
		return
	}
	gs.backendRefsChecked = true
	ref := t.Backend.ClientCertificateRef
	ns := gs.gw.Namespace
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	switch {
	case (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Secret"):
		gs.backendRefReason, gs.backendRefMessage = string(gwv1.GatewayReasonInvalidClientCertificateRef), "clientCertificateRef is not a Secret"
	case ns != gs.gw.Namespace && !granted(in.Grants, groupName, "Gateway", gs.gw.Namespace, "", "Secret", ns, string(ref.Name)):
		gs.backendRefReason, gs.backendRefMessage = string(gwv1.GatewayReasonRefNotPermitted), errorf("no ReferenceGrant in %s allows this Gateway's Secret %s", ns, ref.Name)
	default:
		cert, err := in.Secret(ns, string(ref.Name))
		if err != nil {
			gs.backendRefReason, gs.backendRefMessage = string(gwv1.GatewayReasonInvalidClientCertificateRef), errorf("Secret %s/%s: %v", ns, ref.Name, err)
			return
		}
		sum := sha256.Sum256(bytes.Join(cert.Certificate, nil))
		gs.backendCert = &backendCert{cert: cert, key: hex.EncodeToString(sum[:])}
	}
}
