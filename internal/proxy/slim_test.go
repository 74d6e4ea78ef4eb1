package proxy

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
)

// The proxy computes the same service ports from compacted slices as from
// the decoded ones: every field it reads survives.
func TestCompactSliceKeepsWhatTheProxyReads(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"}, Spec: corev1.ServiceSpec{
		ClusterIP: "10.96.0.5", ClusterIPs: []string{"10.96.0.5"}, Type: corev1.ServiceTypeNodePort,
		Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080},
			{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53}}}}
	ep := func(addr, node string, ready, serving, terminating *bool, zone string) discoveryv1.Endpoint {
		e := discoveryv1.Endpoint{Addresses: []string{addr}, NodeName: ptr.To(node), Hostname: ptr.To("h"),
			Conditions: discoveryv1.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: "p"}}
		if zone != "" {
			e.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: zone}}}
		}
		return e
	}
	slices := []*discoveryv1.EndpointSlice{{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-a", Namespace: "ns", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}, Annotations: map[string]string{"x": "y"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](8080)}, {Name: ptr.To("dns"), Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To[int32](5353)}},
		Endpoints: []discoveryv1.Endpoint{
			ep("10.244.1.2", "n1", ptr.To(true), ptr.To(true), ptr.To(false), "z1"),
			ep("10.244.1.3", "n1", ptr.To(false), ptr.To(true), ptr.To(true), "z1"),
			ep("10.244.2.2", "n2", nil, nil, nil, ""),
			ep("10.244.2.3", "n2", ptr.To(false), ptr.To(false), ptr.To(true), "z2"),
		},
	}}
	var compact []*discoveryv1.EndpointSlice
	for _, sl := range slices {
		c, err := CompactSlice(sl)
		if err != nil {
			t.Fatal(err)
		}
		compact = append(compact, c.(*discoveryv1.EndpointSlice))
	}
	want := ServicePortsFor(corev1.IPv4Protocol, svc, slices)
	got := ServicePortsFor(corev1.IPv4Protocol, svc, compact)
	if len(want) != 2 || len(want[0].AllEndpoints) != 4 {
		t.Fatalf("the fixture lost its point: %+v", want)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("from compacted slices:\n%+v\nwant\n%+v", got, want)
	}
	if sliceServiceKey(compact[0]) != "ns/web" {
		t.Errorf("service key %q", sliceServiceKey(compact[0]))
	}
	headless := slices[0].DeepCopy()
	headless.Labels["service.kubernetes.io/headless"] = ""
	headless.Labels["app"] = "web"
	c, _ := CompactSlice(headless)
	if l := c.(*discoveryv1.EndpointSlice).Labels; notOursSelector.Matches(labels.Set(l)) || len(l) != 2 {
		t.Errorf("compacted labels %v: want the service name and headless, nothing else", l)
	}
	if other, _ := CompactSlice("not a slice"); other != "not a slice" {
		t.Error("a non-slice was changed")
	}
}

// The proxy computes the same service ports from a compacted Service as
// from the decoded one, for a Service that sets every field it reads.
func TestCompactServiceKeepsWhatTheProxyReads(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", Labels: map[string]string{"app": "web"},
			Annotations: map[string]string{"x": "y"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.96.0.5", ClusterIPs: []string{"10.96.0.5"},
			Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080},
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, NodePort: 30053}},
			ExternalIPs: []string{"192.0.2.7"}, SessionAffinity: corev1.ServiceAffinityClientIP,
			SessionAffinityConfig: &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}},
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyLocal),
			HealthCheckNodePort:   31000, LoadBalancerSourceRanges: []string{"203.0.113.0/24"},
		},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
			{IP: "198.19.100.1"}, {IP: "198.19.100.2", IPMode: ptr.To(corev1.LoadBalancerIPModeProxy)}}}},
	}
	slices := []*discoveryv1.EndpointSlice{{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-a", Namespace: "ns", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](8080)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.2"}, NodeName: ptr.To("n1"),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}}
	c, err := CompactService(svc.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	compact := c.(*corev1.Service)
	want := ServicePortsFor(corev1.IPv4Protocol, svc, slices)
	got := ServicePortsFor(corev1.IPv4Protocol, compact, slices)
	if len(want) != 2 || !want[0].ExternalLocal || !want[0].InternalLocal || want[0].HealthCheckNodePort == 0 || len(want[0].SourceRanges) == 0 {
		t.Fatalf("the fixture lost its point: %+v", want)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("from a compacted Service:\n%+v\nwant\n%+v", got, want)
	}
	if compact.Name != "web" || compact.Namespace != "ns" {
		t.Errorf("identity or labels lost: %+v", compact.ObjectMeta)
	}
	if compact.Labels != nil || compact.Annotations != nil || compact.ManagedFields != nil || compact.Spec.Selector != nil {
		t.Error("fields nobody reads were kept")
	}
	other := svc.DeepCopy()
	other.Labels["service.kubernetes.io/service-proxy-name"] = "another"
	if c, _ := CompactService(other); notOursSelector.Matches(labels.Set(c.(*corev1.Service).Labels)) {
		t.Error("a Service of another proxy became ours")
	}
	if other, _ := CompactService("not a service"); other != "not a service" {
		t.Error("a non-Service was changed")
	}
}
