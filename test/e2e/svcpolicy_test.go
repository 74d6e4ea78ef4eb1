//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"weft.dev/weft/internal/lab"
)

func createService(t *testing.T, svc *corev1.Service) *corev1.Service {
	t.Helper()
	out, err := client.CoreV1().Services(svc.Namespace).Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Session affinity, hairpin, UDP and externalTrafficPolicy Local with its
// health check node port, with real packets in the lab.
func TestServicePolicies(t *testing.T) {
	ns := newNamespace(t)
	backends := deployWeb(t, ns, 3)
	ports := []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)},
		{Name: "udp", Port: 81, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(8081)}}
	sticky := createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "sticky", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: ports,
			SessionAffinity: corev1.ServiceAffinityClientIP}})
	plain := createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: ports}})
	c := createReady(t, pinnedPod(ns, "client", "weft-node-2"))["client"]
	_ = c

	t.Run("SessionAffinity", func(t *testing.T) {
		var first string
		eventually(t, 20*time.Second, "service programmed", func() error {
			out, err := execIn(t, ns+"/client", "", "curl", "-sS", "-m", "2", "http://"+sticky.Spec.ClusterIP+"/hostname")
			first = out
			return err
		})
		for i := 0; i < 12; i++ {
			if got := curl(t, ns+"/client", "http://"+sticky.Spec.ClusterIP+"/hostname"); got != first {
				t.Fatalf("request %d went to %s, the first to %s", i, got, first)
			}
		}
	})

	t.Run("Hairpin", func(t *testing.T) {
		// A backend reaching its own service may land on itself.
		self := backends[0]
		seenSelf := false
		for i := 0; i < 30 && !seenSelf; i++ {
			out, err := execIn(t, ns+"/"+self.Name, "", "curl", "-sS", "-m", "2", "http://"+plain.Spec.ClusterIP+"/hostname")
			if err != nil {
				t.Fatalf("backend → own service: %v", err)
			}
			seenSelf = out == self.Name
		}
		if !seenSelf {
			t.Fatal("a backend never reached itself through its service in 30 tries")
		}
	})

	t.Run("UDP", func(t *testing.T) {
		udp := fmt.Sprintf("exec 3<>/dev/udp/%s/81; printf hello-udp >&3; timeout 3 head -c 9 <&3", plain.Spec.ClusterIP)
		eventually(t, 10*time.Second, "UDP through the ClusterIP", func() error {
			out, err := execIn(t, ns+"/client", "", "bash", "-c", udp)
			if err != nil || out != "hello-udp" {
				return fmt.Errorf("%q %v", out, err)
			}
			return nil
		})
	})

	t.Run("ExternalTrafficPolicyLocal", func(t *testing.T) {
		// One backend, on weft-node-1 only.
		p := pinnedPod(ns, "only", "weft-node-1")
		p.Labels = map[string]string{"app": "only"}
		createReady(t, p)
		svc := createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "local", Namespace: ns},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "only"},
				ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
				Ports:                 []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}})
		// LoadBalancer type would allocate the health check port; for a
		// NodePort service the lab sets it via a LoadBalancer service below.
		np := svc.Spec.Ports[0].NodePort
		node1, node2 := nodeByName(t, "weft-node-1"), nodeByName(t, "weft-node-2")
		ip1, ip2 := node1.Status.Addresses[0].Address, node2.Status.Addresses[0].Address
		eventually(t, 20*time.Second, "NodePort on the endpoint's node keeps the client IP", func() error {
			out, err := execIn(t, "outside", "", "curl", "-sS", "-m", "2", fmt.Sprintf("http://%s:%d/clientip", ip1, np))
			if err != nil || out != lab.OutsideIP {
				return fmt.Errorf("%q %v (want %s)", out, err, lab.OutsideIP)
			}
			return nil
		})
		if out, err := execIn(t, "outside", "", "curl", "-sS", "-m", "2", fmt.Sprintf("http://%s:%d/clientip", ip2, np)); err == nil {
			t.Errorf("NodePort on a node without a local endpoint answered: %q", out)
		}
		// A LoadBalancer service gets a health check node port.
		lb := createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "lb", Namespace: ns},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "only"},
				ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal, AllocateLoadBalancerNodePorts: ptr.To(true),
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}})
		hc := lb.Spec.HealthCheckNodePort
		if hc == 0 {
			t.Fatal("no healthCheckNodePort allocated")
		}
		eventually(t, 20*time.Second, "health check node ports", func() error {
			code1, _ := execIn(t, "outside", "", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2", fmt.Sprintf("http://%s:%d/", ip1, hc))
			code2, _ := execIn(t, "outside", "", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2", fmt.Sprintf("http://%s:%d/", ip2, hc))
			if strings.TrimSpace(code1) != "200" || strings.TrimSpace(code2) != "503" {
				return fmt.Errorf("node-1 %s, node-2 %s (want 200, 503)", code1, code2)
			}
			return nil
		})
	})
}

// trafficDistribution PreferSameNode: with a backend on every worker, a
// client's connections stay on its own node (hints from the real
// EndpointSlice controller).
func TestTrafficDistributionPreferSameNode(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	ds := daemonSet(t, ns)
	svc := createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "near", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "ds"}, TrafficDistribution: ptr.To(corev1.ServiceTrafficDistributionPreferSameNode),
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}})
	_ = ctx
	for _, from := range ds {
		var got string
		eventually(t, 30*time.Second, "requests from "+from.Spec.NodeName+" stay on that node", func() error {
			for i := 0; i < 8; i++ {
				out, err := execIn(t, ns+"/"+from.Name, "", "curl", "-sS", "-m", "2", "http://"+svc.Spec.ClusterIP+"/hostname")
				if err != nil {
					return err
				}
				got = out
				if out != from.Name {
					return fmt.Errorf("request from %s on %s reached %s", from.Name, from.Spec.NodeName, out)
				}
			}
			return nil
		})
		_ = got
	}
}

// LoadBalancer services get an address from the lab pool (weft lb-ipam)
// and the proxy serves it.
func TestLoadBalancerPool(t *testing.T) {
	ns := newNamespace(t)
	p := pinnedPod(ns, "lbsrv", "weft-node-1")
	p.Labels = map[string]string{"app": "lbsrv"}
	createReady(t, p, pinnedPod(ns, "client", "weft-node-2"))
	svc := createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "lb", Namespace: ns},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "lbsrv"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}})
	var ip string
	eventually(t, 20*time.Second, "load-balancer address assigned", func() error {
		got, err := client.CoreV1().Services(ns).Get(context.Background(), svc.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(got.Status.LoadBalancer.Ingress) == 0 {
			return fmt.Errorf("no ingress yet")
		}
		ip = got.Status.LoadBalancer.Ingress[0].IP
		return nil
	})
	if !mustCIDR(lab.LBPool).Contains(net.ParseIP(ip)) {
		t.Fatalf("address %s outside the pool %s", ip, lab.LBPool)
	}
	eventually(t, 20*time.Second, "reachable on the load-balancer address", func() error {
		out, err := execIn(t, ns+"/client", "", "curl", "-sS", "-m", "2", "http://"+ip+"/hostname")
		if err != nil || out != "lbsrv" {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	})
}
