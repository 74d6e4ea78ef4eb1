//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	netns "github.com/containernetworking/plugins/pkg/ns"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"weft.dev/weft/internal/lab"
	"weft.dev/weft/internal/lab/kubelet"
	"weft.dev/weft/internal/proxy/sctptest"
	"weft.dev/weft/internal/routing"
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
		// Like NodePorts, health check ports listen on the node's InternalIPs
		// only (--nodeport-addresses primary): not on its VXLAN address.
		vtep := routing.VTEPAddress(routing.PeerFromNode(node1).PodCIDRs).String()
		if out, err := execIn(t, "weft-node-2", "", "curl", "-sS", "-m", "3", fmt.Sprintf("http://%s:%d/", vtep, hc)); !refused(err) {
			t.Errorf("health check port on weft-node-1's VXLAN address %s: %q %v, want connection refused", vtep, out, err)
		}
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

// routeFromRouter makes the lab router send dst to a node, as an upstream
// router configured (or, later, told by BGP) to reach a load-balancer or
// external IP through that node; the route goes at the end of the test.
func routeFromRouter(t *testing.T, dst, node string) {
	t.Helper()
	via := nodeByName(t, node).Status.Addresses[0].Address
	if out, err := hostCommand("ip", "-n", lab.RouterNS, "route", "replace", dst+"/32", "via", via); err != nil {
		t.Fatalf("route %s via %s on the router: %v %s", dst, via, err, out)
	}
	t.Cleanup(func() { _, _ = hostCommand("ip", "-n", lab.RouterNS, "route", "del", dst+"/32") })
}

// loadBalancerSourceRanges, externalIPs and internalTrafficPolicy Local
// with real packets: from the outside namespace through the router to a
// node without the endpoint, and from pods on both nodes.
func TestSourceRangesExternalIPsAndInternalLocal(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	srv := pinnedPod(ns, "srv", "weft-node-1")
	srv.Labels = map[string]string{"app": "srv"}
	createReady(t, srv, pinnedPod(ns, "near", "weft-node-1"), pinnedPod(ns, "far", "weft-node-2"))
	port := []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}
	sel := map[string]string{"app": "srv"}
	lb := createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "lb", Namespace: ns},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: sel, Ports: port,
			LoadBalancerSourceRanges: []string{lab.OutsideIP + "/32"}}})
	const externalIP = "198.19.200.10" // lab underlay range, held by no one
	createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ext", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: sel, Ports: port, ExternalIPs: []string{externalIP}}})
	itp := createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "itp", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: sel, Ports: port,
			InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyLocal)}})
	var lbIP string
	eventually(t, 20*time.Second, "load-balancer address assigned", func() error {
		got, err := client.CoreV1().Services(ns).Get(ctx, lb.Name, metav1.GetOptions{})
		if err != nil || len(got.Status.LoadBalancer.Ingress) == 0 {
			return fmt.Errorf("no ingress yet (%v)", err)
		}
		lbIP = got.Status.LoadBalancer.Ingress[0].IP
		return nil
	})
	routeFromRouter(t, lbIP, "weft-node-2")
	routeFromRouter(t, externalIP, "weft-node-2")
	reaches := func(from, url string) error {
		out, err := execIn(t, from, "", "curl", "-sS", "-m", "2", url)
		if err != nil || out != "srv" {
			return fmt.Errorf("%s → %s: %q %v", from, url, out, err)
		}
		return nil
	}
	// blocked wants the packets dropped (curl times out, exit 28): a refusal
	// or a routing error would mean another rule, or none, caught them.
	blocked := func(from, url string) error {
		out, err := execIn(t, from, "", "curl", "-sS", "-m", "2", url)
		if err == nil {
			return fmt.Errorf("%s → %s answered %q", from, url, out)
		}
		if !strings.Contains(err.Error(), "exit status 28") {
			return fmt.Errorf("%s → %s failed other than by a drop: %v %q", from, url, err, out)
		}
		return nil
	}

	t.Run("LoadBalancerSourceRanges", func(t *testing.T) {
		lbURL := "http://" + lbIP + "/hostname"
		eventually(t, 20*time.Second, "outside (inside the ranges) reaches the load-balancer IP", func() error { return reaches("outside", lbURL) })
		// The ranges hold for pods too, as with kube-proxy.
		eventually(t, 20*time.Second, "a pod outside the ranges is kept off the load-balancer IP", func() error { return blocked(ns+"/far", lbURL) })
		got, err := client.CoreV1().Services(ns).Get(ctx, lb.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got.Spec.LoadBalancerSourceRanges = []string{"192.0.2.0/24"}
		if _, err := client.CoreV1().Services(ns).Update(ctx, got, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "outside, no longer in the ranges, is dropped", func() error { return blocked("outside", lbURL) })
		// The NodePort of the same service is not filtered.
		nodeIP := nodeByName(t, "weft-node-2").Status.Addresses[0].Address
		if err := reaches("outside", fmt.Sprintf("http://%s:%d/hostname", nodeIP, got.Spec.Ports[0].NodePort)); err != nil {
			t.Errorf("NodePort of a service with loadBalancerSourceRanges: %v", err)
		}
	})

	t.Run("ExternalIPs", func(t *testing.T) {
		url := "http://" + externalIP + "/hostname"
		eventually(t, 20*time.Second, "outside reaches the externalIP through a node without the endpoint", func() error { return reaches("outside", url) })
		if err := reaches(ns+"/far", url); err != nil {
			t.Errorf("pod → externalIP: %v", err)
		}
	})

	t.Run("InternalTrafficPolicyLocal", func(t *testing.T) {
		url := "http://" + itp.Spec.ClusterIP + "/hostname"
		eventually(t, 20*time.Second, "a pod on the endpoint's node reaches it", func() error { return reaches(ns+"/near", url) })
		// No endpoint on weft-node-2: its pods get nothing, not the remote one.
		if err := blocked(ns+"/far", url); err != nil {
			t.Error(err)
		}
		// From weft-node-1 itself (hostNetwork traffic is internal too).
		if err := reaches("weft-node-1", url); err != nil {
			t.Errorf("node → ITP Local service with a local endpoint: %v", err)
		}
	})
}

// podNetNS opens a lab pod's network namespace.
func podNetNS(t *testing.T, p *corev1.Pod) netns.NetNS {
	t.Helper()
	n, err := netns.GetNS(filepath.Join("/run/netns", kubelet.NetNSName(p.UID)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// SCTP services with real SCTP packets across nodes: this kernel has no
// SCTP sockets, so raw sockets in the pods' and the outside namespace send
// an association's INIT and see it arrive at the endpoint, DNATed.
func TestSCTPService(t *testing.T) {
	ns := newNamespace(t)
	srv := pinnedPod(ns, "srv", "weft-node-1")
	srv.Labels = map[string]string{"app": "srv"}
	pods := createReady(t, srv, pinnedPod(ns, "far", "weft-node-2"))
	svc := createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "assoc", Namespace: ns},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "srv"},
			Ports: []corev1.ServicePort{{Name: "sctp", Port: 80, Protocol: corev1.ProtocolSCTP, TargetPort: intstr.FromInt32(8080)}}}})
	server := sctptest.Open(t, podNetNS(t, pods["srv"]))
	client := sctptest.Open(t, podNetNS(t, pods["far"]))
	outsideNS, err := netns.GetNS(filepath.Join("/run/netns", lab.OutsideNS))
	if err != nil {
		t.Fatal(err)
	}
	defer outsideNS.Close()
	outside := sctptest.Open(t, outsideNS)
	want := pods["srv"].Status.PodIP + ":8080"
	node2 := net.ParseIP(nodeByName(t, "weft-node-2").Status.Addresses[0].Address)
	for i, c := range []struct {
		what     string
		fd       int
		ip       net.IP
		port     uint16
		wantFrom string // "" when masqueraded
	}{
		{"pod on weft-node-2 → ClusterIP", client, net.ParseIP(svc.Spec.ClusterIP), 80, pods["far"].Status.PodIP},
		{"outside → NodePort of weft-node-2", outside, node2, uint16(svc.Spec.Ports[0].NodePort), ""},
	} {
		src := uint16(41000 + i)
		var got sctptest.Seen
		eventually(t, 20*time.Second, c.what+" arrives at the endpoint", func() error {
			if err := sctptest.SendInit(c.fd, src, c.ip, c.port); err != nil {
				return err
			}
			var err error
			got, err = sctptest.ReadInit(server)
			if err != nil {
				return err
			}
			if got.Dst != want {
				return fmt.Errorf("arrived as %s, want %s", got.Dst, want)
			}
			return nil
		})
		from, _, _ := net.SplitHostPort(got.Src)
		if c.wantFrom != "" && from != c.wantFrom {
			t.Errorf("%s: arrived from %s, want the client's %s", c.what, from, c.wantFrom)
		}
		if c.wantFrom == "" && from == lab.OutsideIP {
			t.Errorf("%s: not masqueraded (from %s)", c.what, got.Src)
		}
	}
}

// The proxy follows its Node: relabelled into another zone, a node uses
// that zone's endpoints (topology hints) at once, without an agent restart.
func TestProxyFollowsNodeZone(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	const zoneLabel = "topology.kubernetes.io/zone"
	zoneA := nodeByName(t, "weft-node-2").Labels[zoneLabel]
	zoneB := nodeByName(t, "weft-node-3").Labels[zoneLabel]
	if zoneA == "" || zoneB == "" || zoneA == zoneB || nodeByName(t, "weft-node-1").Labels[zoneLabel] != zoneA {
		t.Fatalf("the lab's zones lost the test its point: node-1/2 in %q, node-3 in %q", zoneA, zoneB)
	}
	srvA, srvB := pinnedPod(ns, "srv-a", "weft-node-2"), pinnedPod(ns, "srv-b", "weft-node-3")
	srvA.Labels = map[string]string{"app": "zoned"}
	srvB.Labels = map[string]string{"app": "zoned"}
	createReady(t, srvA, srvB, pinnedPod(ns, "client", "weft-node-1"))
	svc := createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "zoned", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "zoned"}, TrafficDistribution: ptr.To(corev1.ServiceTrafficDistributionPreferSameZone),
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}})
	allFrom := func(want string) func() error {
		return func() error {
			for i := 0; i < 8; i++ {
				out, err := execIn(t, ns+"/client", "", "curl", "-sS", "-m", "2", "http://"+svc.Spec.ClusterIP+"/hostname")
				if err != nil {
					return err
				}
				if out != want {
					return fmt.Errorf("request %d reached %s", i, out)
				}
			}
			return nil
		}
	}
	relabel := func(zone string) {
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, zoneLabel, zone)
		if _, err := client.CoreV1().Nodes().Patch(ctx, "weft-node-1", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "weft-node-1 in "+zoneA+" uses "+zoneA+"'s endpoint", allFrom("srv-a"))
	relabel(zoneB)
	t.Cleanup(func() { relabel(zoneA) })
	eventually(t, 15*time.Second, "weft-node-1 relabelled into "+zoneB+" uses "+zoneB+"'s endpoint", allFrom("srv-b"))
}
