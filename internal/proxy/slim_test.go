package proxy

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	if other, _ := CompactSlice("not a slice"); other != "not a slice" {
		t.Error("a non-slice was changed")
	}
}
