package netpol

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The shape of bench/netpol: 300 pods in 20 label groups on 3 nodes,
// 1,000 policies each selecting a group and letting another in on a port.
func benchInput() Input {
	in := Input{Node: "n1"}
	for i := 0; i < 300; i++ {
		p := testPod("bench", fmt.Sprintf("p%d", i), fmt.Sprintf("n%d", i%3+1), fmt.Sprintf("10.244.%d.%d", i%3+1, i/3+2), "filler")
		p.Labels["group"] = fmt.Sprintf("g%d", i%20)
		in.Pods = append(in.Pods, p)
	}
	for i := 0; i < 1000; i++ {
		p := policy("bench", fmt.Sprintf("tenant-%d", i), "", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"group": fmt.Sprintf("g%d", (i+1)%20)}}}},
			Ports: []networkingv1.NetworkPolicyPort{numPort(corev1.ProtocolTCP, int32(8000+i%100))}}}, nil)
		p.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"group": fmt.Sprintf("g%d", i%20)}}
		in.Policies = append(in.Policies, p)
	}
	return in
}

func BenchmarkCompile1000Policies300Pods(b *testing.B) {
	in := benchInput()
	for b.Loop() {
		Compile(in)
	}
}

// A pod change with the policies unchanged: what a sync costs in the agent.
func BenchmarkCompile1000Policies300PodsMemo(b *testing.B) {
	in := benchInput()
	in.Memo = &Memo{}
	for b.Loop() {
		Compile(in)
	}
}
