package netpol

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// memoPolicies covers each part a parsed form holds: selectors of both
// kinds, ipBlocks, numeric, ranged and named ports, both directions.
func memoPolicies() []*networkingv1.NetworkPolicy {
	end := int32(9000)
	ranged := numPort(tcp, 8000)
	ranged.EndPort = &end
	return []*networkingv1.NetworkPolicy{
		policy("default", "in", "a", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("b")},
				{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "x"}}, PodSelector: sel("y")},
				{IPBlock: &networkingv1.IPBlock{CIDR: "203.0.113.0/24", Except: []string{"203.0.113.0/29"}}}},
			Ports: []networkingv1.NetworkPolicyPort{numPort(tcp, 80), ranged, namePort(tcp, "http")}}}, nil),
		policy("default", "eg", "b", egressOnly, nil, []networkingv1.NetworkPolicyEgressRule{{
			To:    []networkingv1.NetworkPolicyPeer{{PodSelector: sel("a")}},
			Ports: []networkingv1.NetworkPolicyPort{namePort(tcp, "metrics"), numPort(udp, 53)}}}),
	}
}

// A compile that reuses parsed policies gives the table a fresh compile
// gives, after pods change and after a policy is replaced by a new version.
func TestMemoGivesTheTableAFreshCompileGives(t *testing.T) {
	in := testInput()
	in.Policies = memoPolicies()
	memo := &Memo{}
	check := func(step string) {
		t.Helper()
		fresh := in
		fresh.Memo = nil
		want := Compile(fresh)
		memoized := in
		memoized.Memo = memo
		if got := Compile(memoized); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: the memoized compile differs from a fresh one", step)
		}
	}
	check("first compile")
	check("nothing changed")

	// Pod b becomes app=a: a new object, as an informer hands out.
	b := in.Pods[1].DeepCopy()
	b.Labels = map[string]string{"app": "a"}
	in.Pods = append([]*corev1.Pod{in.Pods[0], b}, in.Pods[2:]...)
	check("a pod's labels changed")

	// The ingress policy now lets app=c in instead of app=b.
	p := in.Policies[0].DeepCopy()
	p.Spec.Ingress[0].From[0].PodSelector = sel("c")
	p.Spec.Ingress[0].Ports = p.Spec.Ingress[0].Ports[:1]
	in.Policies = []*networkingv1.NetworkPolicy{p, in.Policies[1]}
	check("a policy was replaced")

	if n := len(memo.prev); n != len(in.Policies) {
		t.Errorf("the memo keeps %d parsed policies, want %d (the replaced one dropped)", n, len(in.Policies))
	}
}
