package proxy

import (
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"weft.dev/weft/internal/proxy/sctptest"
)

// SCTP ClusterIP and NodePort: real SCTP packets are DNATed to the
// endpoint (address and port rewritten, checksum redone by the kernel),
// the client's address kept for pod traffic.
func TestPrivilegedSCTPServiceDNAT(t *testing.T) {
	tp := newTopo(t)
	svc := service("assoc", "10.96.0.60", 80, 30090)
	svc.Spec.Ports[0].Protocol = corev1.ProtocolSCTP
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "assoc-abc", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "assoc"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolSCTP)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
	startProxy(t, tp, svc, sl)
	server, client := sctptest.Open(t, tp.server), sctptest.Open(t, tp.client)
	for i, dst := range []struct {
		ip   string
		port uint16
	}{{"10.96.0.60", 80}, {"198.18.100.1", 30090}} {
		src := uint16(40000 + i)
		if err := sctptest.SendInit(client, src, net.ParseIP(dst.ip), dst.port); err != nil {
			t.Fatalf("send to %s: %v", dst.ip, err)
		}
		got, err := sctptest.ReadInit(server)
		if err != nil {
			t.Fatalf("SCTP INIT to %s:%d never reached the endpoint: %v", dst.ip, dst.port, err)
		}
		if got.Dst != "10.244.1.2:8080" {
			t.Errorf("SCTP to %s:%d arrived as %s, want 10.244.1.2:8080", dst.ip, dst.port, got.Dst)
		}
		// Pod → ClusterIP keeps the pod's address; NodePort traffic is
		// masqueraded (externalTrafficPolicy Cluster).
		from, _, _ := net.SplitHostPort(got.Src)
		if dst.port == 80 && from != "10.244.0.2" {
			t.Errorf("pod → SCTP ClusterIP arrived from %s, want the pod's address", got.Src)
		}
		if dst.port == 30090 && from == "10.244.0.2" {
			t.Errorf("SCTP NodePort traffic not masqueraded (from %s)", got.Src)
		}
	}
}
