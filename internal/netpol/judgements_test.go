package netpol

import (
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
)

// Every local pod address is reported (host-network pods and other nodes'
// pods are not), judged in the directions a NetworkPolicy or a
// ClusterNetworkPolicy of either tier selects it.
func TestJudgements(t *testing.T) {
	in := testInput()
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "deny-a", "a", ingressOnly, nil, nil)}
	in.ClusterPolicies = []*cnp.ClusterNetworkPolicy{
		clusterPolicy("other-out", cnp.BaselineTier, 10, "other", nil, []cnp.ClusterNetworkPolicyEgressRule{{Action: cnp.ClusterNetworkPolicyRuleActionDeny,
			To: []cnp.ClusterNetworkPolicyEgressPeer{{Networks: []cnp.CIDR{"192.0.2.0/24"}}}}})}
	got := judgements(in, Compile(in))
	want := map[netip.Addr]Judgement{
		netip.MustParseAddr(ipA): {Ingress: true},
		netip.MustParseAddr(ipB): {},
		netip.MustParseAddr(ipY): {Egress: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("judgements %v, want %v", got, want)
	}
}

// A dual-stack pod's IPv6 address is reported and judged as its IPv4
// one is: the fast path forwards IPv6 flows of pods reported open.
func TestJudgementsDualStack(t *testing.T) {
	in := testInput()
	for _, p := range in.Pods {
		if p.Name == "a" || p.Name == "b" {
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: "fd00:10:244::" + p.Name})
		}
	}
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "deny-a", "a", ingressOnly, nil, nil)}
	got := judgements(in, Compile(in))
	for ip, want := range map[string]Judgement{"fd00:10:244::a": {Ingress: true}, "fd00:10:244::b": {}} {
		if j, ok := got[netip.MustParseAddr(ip)]; !ok || j != want {
			t.Errorf("%s: judgement %v (reported %v), want %v", ip, j, ok, want)
		}
	}
}
