package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func udpEcho(t *testing.T, n ns.NetNS, addr, name string) {
	var pc net.PacketConn
	if err := n.Do(func(ns.NetNS) error {
		var err error
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(name), from)
		}
	}()
}

func udpSlice(ip string) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "dns-abc", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "dns"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("dns"), Port: ptr.To[int32](5353), Protocol: ptr.To(corev1.ProtocolUDP)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
}

// A UDP client that keeps its socket must follow the service to a new
// endpoint once the old one is gone: the stale conntrack entry is removed.
func TestPrivilegedStaleUDPConntrack(t *testing.T) {
	tp, server2, _ := policyTopo(t)
	udpEcho(t, tp.server, "10.244.1.2:5353", "A")
	udpEcho(t, server2, "10.244.1.3:5353", "B")
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "dns", Namespace: "default"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}}}
	h := startProxy(t, tp, svc, udpSlice("10.244.1.2"))
	h.p.CleanConntrack = true
	client, ctx, p, sync := h.client, h.ctx, h.p, h.sync
	var conn net.Conn
	if err := tp.client.Do(func(ns.NetNS) error {
		var err error
		conn, err = net.Dial("udp", "10.96.0.10:53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ask := func() string {
		conn.SetDeadline(time.Now().Add(time.Second))
		conn.Write([]byte("q"))
		b := make([]byte, 16)
		n, _ := conn.Read(b)
		return string(b[:n])
	}
	if got := ask(); got != "A" {
		t.Fatalf("first answer %q, want A", got)
	}
	if _, err := client.DiscoveryV1().EndpointSlices("default").Update(ctx, udpSlice("10.244.1.3"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, func() bool {
		s, _ := p.slices.EndpointSlices("default").Get("dns-abc")
		return s != nil && s.Endpoints[0].Addresses[0] == "10.244.1.3"
	})
	sync()
	if got := ask(); got != "B" {
		t.Fatalf("after the endpoint moved: %q, want B (stale conntrack entry kept?)", got)
	}
}
