package netpol

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
)

// clusterPolicy is a ClusterNetworkPolicy whose subject is every pod of
// the namespaces labelled kubernetes.io/metadata.name=ns.
func clusterPolicy(name string, t cnp.Tier, prio int32, ns string, in []cnp.ClusterNetworkPolicyIngressRule, eg []cnp.ClusterNetworkPolicyEgressRule) *cnp.ClusterNetworkPolicy {
	return &cnp.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: cnp.ClusterNetworkPolicySpec{Tier: t, Priority: prio,
			Subject: cnp.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}},
			Ingress: in, Egress: eg}}
}

// fromNamespace is an ingress rule with one namespaces peer.
func fromNamespace(action cnp.ClusterNetworkPolicyRuleAction, ns string, protocols ...cnp.ClusterNetworkPolicyProtocol) cnp.ClusterNetworkPolicyIngressRule {
	return cnp.ClusterNetworkPolicyIngressRule{Action: action, Protocols: protocols,
		From: []cnp.ClusterNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}}}}
}

func tcpPort(n int32) cnp.ClusterNetworkPolicyProtocol {
	return cnp.ClusterNetworkPolicyProtocol{TCP: &cnp.ClusterNetworkPolicyProtocolTCP{DestinationPort: &cnp.Port{Number: n}}}
}

const (
	accept = cnp.ClusterNetworkPolicyRuleActionAccept
	deny   = cnp.ClusterNetworkPolicyRuleActionDeny
	pass   = cnp.ClusterNetworkPolicyRuleActionPass
)

// allowFromOther is a NetworkPolicy of default letting in all of other.
func allowFromOther() *networkingv1.NetworkPolicy {
	return policy("default", "allow-other", "", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
		{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "x"}}}}}}, nil)
}

// An admin Deny wins over a NetworkPolicy Allow; its other ports are left
// to the NetworkPolicy.
func TestAdminDenyBeatsNetworkPolicy(t *testing.T) {
	in := testInput()
	in.Policies = []*networkingv1.NetworkPolicy{allowFromOther()}
	in.ClusterPolicies = []*cnp.ClusterNetworkPolicy{
		clusterPolicy("no-db", cnp.AdminTier, 10, "default", []cnp.ClusterNetworkPolicyIngressRule{fromNamespace(deny, "other", tcpPort(5432))}, nil)}
	checkAll(t, in, []expect{
		{tcpTo(ipX, ipA, 5432), false}, // admin Deny
		{tcpTo(ipX, ipA, 80), true},    // NetworkPolicy Allow
		{tcpTo(ipC, ipA, 80), false},   // NetworkPolicy isolation
		{tcpTo(ipX, ipY, 5432), true},  // other/y is not the subject
	})
}

// Priorities: the lower number decides; a Pass hands the packet to
// NetworkPolicy, skipping every later admin rule.
func TestAdminPriorityAndPass(t *testing.T) {
	in := testInput()
	in.ClusterPolicies = []*cnp.ClusterNetworkPolicy{
		clusterPolicy("deny-other", cnp.AdminTier, 20, "default", []cnp.ClusterNetworkPolicyIngressRule{fromNamespace(deny, "other")}, nil),
		clusterPolicy("pass-other-80", cnp.AdminTier, 10, "default", []cnp.ClusterNetworkPolicyIngressRule{fromNamespace(pass, "other", tcpPort(80))}, nil),
		clusterPolicy("accept-other-81", cnp.AdminTier, 5, "default", []cnp.ClusterNetworkPolicyIngressRule{fromNamespace(accept, "other", tcpPort(81))}, nil),
	}
	checkAll(t, in, []expect{
		{tcpTo(ipX, ipA, 80), true},  // Pass, no NetworkPolicy: allowed
		{tcpTo(ipX, ipA, 81), true},  // Accept before the Deny
		{tcpTo(ipX, ipA, 82), false}, // the Deny
		{tcpTo(ipC, ipA, 82), true},  // default is no peer of any rule
	})
	// With a NetworkPolicy isolating default, what passed is its to decide.
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "deny-all", "", ingressOnly, nil, nil)}
	checkAll(t, in, []expect{
		{tcpTo(ipX, ipA, 80), false}, // passed, then NetworkPolicy denies
		{tcpTo(ipX, ipA, 81), true},  // admin Accept is final
	})
}

// Equal priorities are ordered by name, so every node decides alike.
func TestAdminPriorityTieByName(t *testing.T) {
	in := testInput()
	in.ClusterPolicies = []*cnp.ClusterNetworkPolicy{
		clusterPolicy("b-deny", cnp.AdminTier, 10, "default", []cnp.ClusterNetworkPolicyIngressRule{fromNamespace(deny, "other")}, nil),
		clusterPolicy("a-accept", cnp.AdminTier, 10, "default", []cnp.ClusterNetworkPolicyIngressRule{fromNamespace(accept, "other")}, nil),
	}
	checkAll(t, in, []expect{{tcpTo(ipX, ipA, 80), true}})
}

// A baseline Deny holds where no NetworkPolicy isolates the pod; where
// one does, NetworkPolicy decides and its Allow overrides the baseline.
func TestBaselineBelowNetworkPolicy(t *testing.T) {
	in := testInput()
	in.ClusterPolicies = []*cnp.ClusterNetworkPolicy{
		clusterPolicy("tenants-apart", cnp.BaselineTier, 10, "default", []cnp.ClusterNetworkPolicyIngressRule{fromNamespace(deny, "other")}, nil)}
	checkAll(t, in, []expect{
		{tcpTo(ipX, ipA, 80), false}, // baseline Deny
		{tcpTo(ipC, ipA, 80), true},  // not a peer of the baseline rule
	})
	in.Policies = []*networkingv1.NetworkPolicy{allowFromOther()}
	checkAll(t, in, []expect{
		{tcpTo(ipX, ipA, 80), true},  // NetworkPolicy Allow overrides
		{tcpTo(ipC, ipA, 80), false}, // and isolates: baseline no longer reached
	})
}

// Egress to networks and nodes; an admin Pass on egress falls through to
// the baseline tier when no NetworkPolicy isolates the pod.
func TestEgressNetworksNodesAndPassToBaseline(t *testing.T) {
	in := testInput()
	in.Nodes = []*corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n2", Labels: map[string]string{"role": "db"}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.0.2"}}}}}
	in.ClusterPolicies = []*cnp.ClusterNetworkPolicy{
		clusterPolicy("pass-web", cnp.AdminTier, 1, "default", nil, []cnp.ClusterNetworkPolicyEgressRule{{Action: pass,
			To: []cnp.ClusterNetworkPolicyEgressPeer{{Networks: []cnp.CIDR{"203.0.113.0/24"}}}}}),
		clusterPolicy("no-metadata", cnp.AdminTier, 2, "default", nil, []cnp.ClusterNetworkPolicyEgressRule{{Action: deny,
			To: []cnp.ClusterNetworkPolicyEgressPeer{{Networks: []cnp.CIDR{"203.0.113.0/24"}}, {Nodes: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "db"}}}}}}),
		clusterPolicy("baseline-web", cnp.BaselineTier, 1, "default", nil, []cnp.ClusterNetworkPolicyEgressRule{{Action: deny,
			To: []cnp.ClusterNetworkPolicyEgressPeer{{Networks: []cnp.CIDR{"203.0.113.5/32"}}}}}),
	}
	checkAll(t, in, []expect{
		{tcpTo(ipA, "203.0.113.5", 443), false}, // passed by admin, denied by baseline
		{tcpTo(ipA, "203.0.113.6", 443), true},  // passed by admin, baseline allows
		{tcpTo(ipA, ipH, 22), false},            // node peer denied
		{tcpTo(ipA, ipC, 80), true},
		{tcpTo(ipY, "203.0.113.5", 443), true}, // other is not the subject
	})
}

// Named ports resolve to the subject pod's container port on ingress.
func TestClusterNamedPort(t *testing.T) {
	in := testInput()
	in.ClusterPolicies = []*cnp.ClusterNetworkPolicy{
		clusterPolicy("no-http-from-other", cnp.AdminTier, 1, "default",
			[]cnp.ClusterNetworkPolicyIngressRule{fromNamespace(deny, "other", cnp.ClusterNetworkPolicyProtocol{DestinationNamedPort: "http"})}, nil)}
	checkAll(t, in, []expect{
		{tcpTo(ipX, ipA, 8080), false}, // a's http
		{tcpTo(ipX, ipA, 9090), true},  // b's http, not a's
		{tcpTo(ipX, ipB, 9090), false},
	})
}

// A rule that cannot be compiled is left out and reported; the others
// and other policies still hold.
func TestClusterPolicyProblems(t *testing.T) {
	in := testInput()
	bad := clusterPolicy("bad", cnp.AdminTier, 1, "default", []cnp.ClusterNetworkPolicyIngressRule{
		{Action: deny, From: []cnp.ClusterNetworkPolicyIngressPeer{{}}},
		fromNamespace(deny, "other", tcpPort(5432)),
	}, []cnp.ClusterNetworkPolicyEgressRule{{Action: deny, To: []cnp.ClusterNetworkPolicyEgressPeer{{DomainNames: []cnp.DomainName{"api.example.com"}}}}})
	in.ClusterPolicies = []*cnp.ClusterNetworkPolicy{bad}
	rs := Compile(in)
	var msgs []string
	for _, p := range rs.Problems {
		msgs = append(msgs, p.Name+": "+p.Message)
	}
	got := strings.Join(msgs, "\n")
	if len(msgs) != 2 || !strings.Contains(got, "ingress[0]") || !strings.Contains(got, "domainNames") {
		t.Errorf("problems:\n%s", got)
	}
	checkAll(t, in, []expect{{tcpTo(ipX, ipA, 5432), false}, {tcpTo(ipX, ipA, 80), true}})
}

// A denial names who decided: the deny chain a packet ends in logs with a
// prefix of direction, tier and policy for a cluster policy's Deny, and
// the direction alone when NetworkPolicy isolation denied it.
func TestDenialsNameTheTierAndPolicy(t *testing.T) {
	in := testInput()
	in.Policies = []*networkingv1.NetworkPolicy{allowFromOther()}
	in.ClusterPolicies = []*cnp.ClusterNetworkPolicy{
		clusterPolicy("no-db", cnp.AdminTier, 10, "default", []cnp.ClusterNetworkPolicyIngressRule{fromNamespace(deny, "other", tcpPort(5432))}, nil),
		clusterPolicy("tenant-wall", cnp.BaselineTier, 10, "other", []cnp.ClusterNetworkPolicyIngressRule{fromNamespace(deny, "default")}, nil),
	}
	rs := Compile(in)
	tr := tracer{t: t, rs: rs}
	for _, c := range []struct {
		p      packet
		prefix string
	}{
		{tcpTo(ipX, ipA, 5432), "ingress admin no-db"},
		{tcpTo(ipC, ipA, 80), "ingress"},
		{tcpTo(ipA, ipY, 80), "ingress baseline tenant-wall"},
	} {
		got := tr.trace(c.p)
		if got.accept {
			t.Fatalf("%s → %s:%d allowed, want denied", c.p.src, c.p.dst, c.p.dport)
		}
		rules := rs.Chains[got.denyBy].Rules
		if len(rules) == 0 || rules[0].Kind != KindLog || rules[0].Addr != c.prefix {
			t.Errorf("%s → %s:%d denied by chain %q logging %+v, want prefix %q", c.p.src, c.p.dst, c.p.dport, got.denyBy, rules, c.prefix)
		}
		if dir, tier, pol := splitPrefix(c.prefix); dir != "ingress" || (tier == "") != (pol == "") {
			t.Errorf("prefix %q read as %q %q %q", c.prefix, dir, tier, pol)
		}
	}
	if long := DenyLogPrefix("egress", "baseline", strings.Repeat("p", 253)); len(long) != maxLogPrefix {
		t.Errorf("prefix of a 253-character name is %d bytes, want %d", len(long), maxLogPrefix)
	}
}
