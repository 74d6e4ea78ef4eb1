package netpol

import (
	"net/netip"
	"reflect"
	"testing"

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
