package proxy

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
)

// Services whose namespace, name and port name are as long as the API
// allows, in every shape that has per-service comments (session affinity,
// externalTrafficPolicy Local, loadBalancerSourceRanges), load into the real
// kernel: a comment over its 128-byte limit would fail every sync.
func TestPrivilegedLongestNamesLoad(t *testing.T) {
	tp := newTopo(t)
	serve(t, tp.server, "10.244.1.2:8080")
	ns := strings.Repeat("n", 63)
	port := strings.Repeat("p", 15)
	mk := func(suffix, ip string, edit func(*corev1.Service)) []runtime.Object {
		name := strings.Repeat("s", 62) + suffix
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
				Ports: []corev1.ServicePort{{Name: port, Port: 80, Protocol: corev1.ProtocolTCP}}}}
		edit(svc)
		es := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: suffix + "-abc", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(port), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.2"}, NodeName: ptr.To("n1"),
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		}
		return []runtime.Object{svc, es}
	}
	lb := func(svc *corev1.Service, ip string, nodePort int32) {
		svc.Spec.Type = corev1.ServiceTypeLoadBalancer
		svc.Spec.Ports[0].NodePort = nodePort
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
	}
	var objs []runtime.Object
	objs = append(objs, mk("a", "10.96.0.60", func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
	})...)
	objs = append(objs, mk("l", "10.96.0.61", func(s *corev1.Service) {
		lb(s, "203.0.113.61", 30061)
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = 32061
	})...)
	objs = append(objs, mk("r", "10.96.0.62", func(s *corev1.Service) {
		lb(s, "203.0.113.62", 30062)
		s.Spec.LoadBalancerSourceRanges = []string{"10.244.0.0/16"}
	})...)
	startProxy(t, tp, objs...) // fails the test if the sync fails
	for _, addr := range []string{"10.96.0.60:80", "10.96.0.61:80", "10.96.0.62:80"} {
		if got, err := dial(tp.client, addr); err != nil || got != "10.244.0.2" {
			t.Errorf("%s: %q %v", addr, got, err)
		}
	}
	// A load-balancer IP inside the source ranges: reached (masqueraded).
	if got, err := dial(tp.client, "203.0.113.62:80"); err != nil || got == "" {
		t.Errorf("load-balancer IP: %q %v", got, err)
	}
}
