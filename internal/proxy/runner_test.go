package proxy

import (
	"log/slog"
	"net"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/knftables"
)

// A node's zone label or InternalIP changed while the agent runs is
// followed by the next sync: NodePorts move to the new address, topology
// hints select the new zone's endpoint.
func TestUpdateNodeResyncs(t *testing.T) {
	ctx := t.Context()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ClusterIP: "10.96.0.5", ClusterIPs: []string{"10.96.0.5"},
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
			Ports:      []corev1.ServicePort{{Name: "http", Port: 80, NodePort: 30080, Protocol: corev1.ProtocolTCP}}}}
	endpoint := func(ip, zone string) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			Hints: &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: zone}}}}
	}
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "ns",
		Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{endpoint("10.244.1.7", "zone-a"), endpoint("10.244.2.7", "zone-b")},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}}}
	factory := informers.NewSharedInformerFactory(fake.NewClientset(svc, slice), 0)
	nft := knftables.NewFake(knftables.InetFamily, TableName)
	p := New(Config{NodeName: "n1", Family: corev1.IPv4Protocol}, nft, factory, slog.New(slog.DiscardHandler), nil)
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())

	syncAndDump := func() string {
		t.Helper()
		if err := p.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		return nft.Dump()
	}
	p.UpdateNode("zone-a", []net.IP{net.ParseIP("198.18.1.11"), nil})
	dump := syncAndDump()
	for _, want := range []string{"198.18.1.11", "10.244.1.7"} {
		if !strings.Contains(dump, want) {
			t.Fatalf("first sync lacks %s:\n%s", want, dump)
		}
	}
	if strings.Contains(dump, "10.244.2.7") {
		t.Fatalf("zone-a node uses the zone-b endpoint:\n%s", dump)
	}

	p.UpdateNode("zone-b", []net.IP{net.ParseIP("198.18.1.99"), nil})
	dump = syncAndDump()
	for _, want := range []string{"198.18.1.99", "10.244.2.7"} {
		if !strings.Contains(dump, want) {
			t.Fatalf("after the node changed, the sync lacks %s:\n%s", want, dump)
		}
	}
	for _, gone := range []string{"198.18.1.11", "10.244.1.7"} {
		if strings.Contains(dump, gone) {
			t.Fatalf("after the node changed, the table still holds %s:\n%s", gone, dump)
		}
	}

	// The same values again (every Node status update) force nothing.
	p.UpdateNode("zone-b", []net.IP{net.ParseIP("198.18.1.99"), nil})
	p.mu.Lock()
	forced := p.nodeChanged
	p.mu.Unlock()
	if forced {
		t.Fatal("an unchanged node forced a full sync")
	}
}
