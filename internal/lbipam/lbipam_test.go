package lbipam

import (
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

func lb(name, requested, assigned string) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerIP: requested}}
	if assigned != "" {
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: assigned}}
	}
	return s
}

func TestPlan(t *testing.T) {
	_, pool, _ := net.ParseCIDR("198.19.100.0/30") // .1 and .2 usable
	other := lb("other-class", "", "")
	other.Spec.LoadBalancerClass = ptr.To("example.com/other")
	cluster := lb("cluster", "", "")
	cluster.Spec.Type = corev1.ServiceTypeClusterIP
	plan, warn := Plan(pool, []*corev1.Service{
		lb("has", "", "198.19.100.1"), lb("new", "", ""), lb("wants-taken", "198.19.100.1", ""), lb("late", "", ""), other, cluster,
	})
	if got := plan[types.NamespacedName{Namespace: "ns", Name: "new"}]; got.String() != "198.19.100.2" {
		t.Fatalf("new got %v", got)
	}
	if len(plan) != 1 {
		t.Fatalf("plan %v", plan)
	}
	if len(warn) != 2 {
		t.Fatalf("warnings %v (want taken request and exhaustion)", warn)
	}
}
