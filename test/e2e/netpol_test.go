//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"weft.dev/weft/internal/testserver"
)

// reaches says whether an HTTP request from a pod (or "outside") to
// ip:port is answered. A refused one fails at its first SYN: no retries.
func reaches(t *testing.T, from, ip string, port int) bool {
	t.Helper()
	_, err := execInFor(t, 5*time.Second, from, "", "curl", "-sS", "--connect-timeout", "0.5", "-m", "2", fmt.Sprintf("http://%s:%d/hostname", ip, port))
	return err == nil
}

func wantReach(t *testing.T, from, ip string, port int, want bool) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%s → %s:%d reached=%v", from, ip, port, want), func() error {
		if got := reaches(t, from, ip, port); got != want {
			return fmt.Errorf("reached=%v", got)
		}
		return nil
	})
}

func createPolicy(t *testing.T, p *networkingv1.NetworkPolicy) {
	t.Helper()
	if _, err := client.NetworkingV1().NetworkPolicies(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func deletePolicy(t *testing.T, ns, name string) {
	t.Helper()
	if err := client.NetworkingV1().NetworkPolicies(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func netpol(ns, name string, target map[string]string, types []networkingv1.PolicyType) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: target}, PolicyTypes: types}}
}

var (
	polIngress = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	polEgress  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
)

func weftBin() string { return filepath.Join(repoRoot, "bin", "weft") }

func ip(p *corev1.Pod) string { return p.Status.PodIP }

func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// Default deny, a namespace allowed in, an ipBlock with except from the
// outside namespace, egress denied but DNS, on the same node and across.
func TestNetworkPolicyIngressAndEgress(t *testing.T) {
	ns := newNamespace(t)
	peerNS := newNamespace(t)
	if _, err := client.CoreV1().Namespaces().Patch(context.Background(), peerNS, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"team":"peer"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := createReady(t, pinnedPod(ns, "server", "weft-node-1"), pinnedPod(ns, "near", "weft-node-1"),
		pinnedPod(ns, "far", "weft-node-3"), pinnedPod(peerNS, "peer", "weft-node-2"))
	server, near, far, peer := ip(pods["server"]), ns+"/near", ns+"/far", peerNS+"/peer"
	// The outside namespace has no route to pods: it comes in through a
	// NodePort of the server's node, whose forward hook sees its address
	// (the proxy masquerades after that, in postrouting).
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "server"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "server"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	svc, err := client.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nodeIP, nodePort := internalIP(nodeByName(t, "weft-node-1")), int(svc.Spec.Ports[0].NodePort)
	for _, from := range []string{near, far, peer} {
		wantReach(t, from, server, 8080, true)
	}
	// The EndpointSlice is kube-controller-manager's to write; what weft
	// does with it is timed from there.
	waitEndpoint(t, ns, "server", server, 90*time.Second)
	wantReach(t, "outside", nodeIP, nodePort, true)

	createPolicy(t, netpol(ns, "deny-in", nil, polIngress))
	for _, from := range []string{near, far, peer} {
		wantReach(t, from, server, 8080, false)
	}
	wantReach(t, "outside", nodeIP, nodePort, false)
	// Egress is not isolated: the server still reaches out.
	wantReach(t, ns+"/server", ip(pods["peer"]), 8080, true)

	allow := netpol(ns, "from-peer-and-outside", map[string]string{"app": "server"}, polIngress)
	allow.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
		{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "peer"}}},
		{IPBlock: &networkingv1.IPBlock{CIDR: "203.0.113.0/24", Except: []string{"203.0.113.128/25"}}},
	}}}
	createPolicy(t, allow)
	wantReach(t, peer, server, 8080, true)
	wantReach(t, "outside", nodeIP, nodePort, true) // the outside namespace is 203.0.113.10
	wantReach(t, near, server, 8080, false)
	wantReach(t, far, server, 8080, false)

	// Egress denied but DNS: the pod resolves through the Service, and
	// reaches nothing else.
	deny := netpol(ns, "deny-eg-but-dns", map[string]string{"app": "far"}, polEgress)
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	deny.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{
		{Protocol: &udp, Port: ptr.To(intstr.FromInt32(53))}, {Protocol: &tcp, Port: ptr.To(intstr.FromInt32(53))}}}}
	createPolicy(t, deny)
	wantReach(t, far, ip(pods["peer"]), 8080, false)
	eventually(t, 10*time.Second, "DNS from an egress-isolated pod", func() error {
		out, err := execIn(t, far, "", "dig", "+short", "+time=1", "+tries=1", "@10.96.0.10", "kubernetes.default.svc.cluster.local")
		if err != nil || strings.TrimSpace(out) != "10.96.0.1" {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	})
}

// Service traffic is judged against the backend pod, after DNAT: a
// ClusterIP from a pod, a NodePort from outside.
func TestNetworkPolicyServiceTrafficJudgedAtBackend(t *testing.T) {
	ns := newNamespace(t)
	pods := createReady(t, pinnedPod(ns, "server", "weft-node-1"), pinnedPod(ns, "client", "weft-node-3"), pinnedPod(ns, "other", "weft-node-3"))
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "server"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "server"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	svc, err := client.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nodeIP := internalIP(nodeByName(t, "weft-node-1"))
	nodePort := int(svc.Spec.Ports[0].NodePort)
	wantReach(t, ns+"/other", svc.Spec.ClusterIP, 80, true)
	wantReach(t, "outside", nodeIP, nodePort, true)

	allow := netpol(ns, "from-client", map[string]string{"app": "server"}, polIngress)
	allow.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
		{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}}}}
	createPolicy(t, allow)
	wantReach(t, ns+"/client", svc.Spec.ClusterIP, 80, true)
	wantReach(t, ns+"/other", svc.Spec.ClusterIP, 80, false)
	wantReach(t, "outside", nodeIP, nodePort, false)
	_ = pods
}

// A label change on a live pod changes what it reaches within a second.
func TestNetworkPolicyLabelChange(t *testing.T) {
	ns := newNamespace(t)
	pods := createReady(t, pinnedPod(ns, "server", "weft-node-1"), pinnedPod(ns, "client", "weft-node-3"))
	allow := netpol(ns, "from-trusted", map[string]string{"app": "server"}, polIngress)
	allow.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
		{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"trusted": "yes"}}}}}}
	createPolicy(t, allow)
	wantReach(t, ns+"/client", ip(pods["server"]), 8080, false)
	start := time.Now()
	if _, err := client.CoreV1().Pods(ns).Patch(context.Background(), "client", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"trusted":"yes"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// The pod probes in a tight loop: the time until it first gets through.
	out, err := execIn(t, ns+"/client", "", "sh", "-c", fmt.Sprintf(
		`for i in $(seq 1 100); do curl -s --connect-timeout 0.05 -m 1 -o /dev/null http://%s:8080/hostname && echo $i && exit 0; done; exit 1`, ip(pods["server"])))
	took := time.Since(start)
	if err != nil {
		t.Fatalf("relabelled pod never got through: %v", err)
	}
	t.Logf("label change → allowed: %s (probe %s)", took.Round(time.Millisecond), out)
	if took > time.Second {
		t.Errorf("label change took %s to take effect, want ≤ 1 s", took)
	}
}

// A pod under default deny is never reached, not even in its first
// milliseconds, by a prober scanning every address of its node; a pod
// allowed egress reaches its server on its first try.
func TestNetworkPolicyClosedFromTheFirstPacket(t *testing.T) {
	ns := newNamespace(t)
	createPolicy(t, netpol(ns, "deny-in", map[string]string{"app": "new"}, polIngress))
	node1 := nodeByName(t, "weft-node-1")
	pods := createReady(t, pinnedPod(ns, "prober", "weft-node-3"), pinnedPod(ns, "server", "weft-node-2"))

	var wg sync.WaitGroup
	var scan testserver.ScanResult
	var scanErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		out, err := execInFor(t, 30*time.Second, ns+"/prober", "", weftBin(), "testserver", "scan", node1.Spec.PodCIDR, "--port=18080", "--for=8s", "--timeout=20ms")
		if scanErr = err; err == nil {
			scanErr = json.Unmarshal([]byte(out), &scan)
		}
	}()
	time.Sleep(time.Second)
	for i := 0; i < 3; i++ {
		p := pinnedPod(ns, fmt.Sprintf("new-%d", i), "weft-node-1")
		p.Labels["app"] = "new"
		p.Spec.Containers[0].Args = []string{"--http-port=18080"}
		p.Spec.Containers[0].ReadinessProbe = nil
		if _, err := client.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if scanErr != nil {
		t.Fatalf("scan: %v", scanErr)
	}
	// The scan answers for every address of the node: other pods there
	// may answer; the new pods must not.
	reached := map[string]bool{}
	for _, a := range scan.Reached {
		reached[a] = true
	}
	for i := 0; i < 3; i++ {
		p, err := client.CoreV1().Pods(ns).Get(context.Background(), fmt.Sprintf("new-%d", i), metav1.GetOptions{})
		if err != nil || p.Status.PodIP == "" {
			t.Fatalf("new-%d did not start during the scan: %v", i, err)
		}
		if reached[p.Status.PodIP] {
			t.Errorf("prober (%d rounds) reached %s (%s) under default deny", scan.Rounds, p.Name, p.Status.PodIP)
		}
	}
	if scan.Rounds < 3 {
		t.Fatalf("prober ran only %d rounds", scan.Rounds)
	}
	t.Logf("%d scan rounds; addresses answering on the node: %v", scan.Rounds, scan.Reached)

	// Egress allowed to the server only: the first connection, made the
	// moment the container starts, goes through.
	eg := netpol(ns, "to-server", map[string]string{"app": "first"}, polEgress)
	eg.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{
		{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}}}}}}
	createPolicy(t, eg)
	first := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "first", Labels: map[string]string{"app": "first"}},
		Spec: corev1.PodSpec{NodeName: "weft-node-1", RestartPolicy: corev1.RestartPolicyNever, TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"curl", "-sS", "--connect-timeout", "0.5", "-m", "2",
				fmt.Sprintf("http://%s:8080/hostname", ip(pods["server"]))}}}}}
	if _, err := client.CoreV1().Pods(ns).Create(context.Background(), first, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "first connection of a new pod", func() error {
		p, err := client.CoreV1().Pods(ns).Get(context.Background(), "first", metav1.GetOptions{})
		if err != nil {
			return err
		}
		switch p.Status.Phase {
		case corev1.PodSucceeded:
			return nil
		case corev1.PodFailed:
			t.Fatalf("the pod's first connection failed")
		}
		return fmt.Errorf("phase %s", p.Status.Phase)
	})
}

// An established TCP connection is cut when a deny arrives.
func TestNetworkPolicyCutsEstablishedConnections(t *testing.T) {
	ns := newNamespace(t)
	pods := createReady(t, pinnedPod(ns, "server", "weft-node-1"), pinnedPod(ns, "client", "weft-node-3"))
	var res testserver.HoldResult
	var holdErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		out, err := execInFor(t, 30*time.Second, ns+"/client", "", weftBin(), "testserver", "hold", ip(pods["server"])+":8081", "--for=6s")
		if holdErr = err; err == nil {
			holdErr = json.Unmarshal([]byte(out), &res)
		}
	}()
	time.Sleep(2 * time.Second)
	createPolicy(t, netpol(ns, "deny-in", nil, polIngress))
	<-done
	if holdErr != nil {
		t.Fatal(holdErr)
	}
	if !res.Cut || res.Echoes < 5 {
		t.Fatalf("connection not cut by the deny (or never worked): %+v", res)
	}
	t.Logf("cut after %s (%d echoes)", res.After, res.Echoes)
}

// A denied connection leaves a log line naming both pods and the policy,
// and the agent's metric counts it.
func TestNetworkPolicyDenialIsLoggedAndCounted(t *testing.T) {
	ns := newNamespace(t)
	pods := createReady(t, pinnedPod(ns, "server", "weft-node-1"), pinnedPod(ns, "client", "weft-node-3"))
	createPolicy(t, netpol(ns, "deny-in", nil, polIngress))
	wantReach(t, ns+"/client", ip(pods["server"]), 8080, false)
	logFile, err := theLab.AgentLog(context.Background(), client, "weft-node-1")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "denial log line", func() error {
		b, err := os.ReadFile(logFile)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "denied by NetworkPolicy") && strings.Contains(line, "srcPod="+ns+"/client") &&
				strings.Contains(line, "dstPod="+ns+"/server") && strings.Contains(line, "policies=["+ns+"/deny-in]") &&
				strings.Contains(line, "direction=ingress") {
				return nil
			}
		}
		return fmt.Errorf("no line for %s/client → %s/server in %s", ns, ns, logFile)
	})
	node1 := internalIP(nodeByName(t, "weft-node-1"))
	eventually(t, 10*time.Second, "denial metric", func() error {
		out, err := execIn(t, "weft-node-1", "", "curl", "-sS", "-m", "2", "http://"+node1+":9402/metrics")
		if err != nil {
			return err
		}
		want := fmt.Sprintf(`weft_policy_denied_packets_total{direction="ingress",namespace=%q,policy="",tier="networkpolicy"}`, ns)
		if !strings.Contains(out, want) {
			return fmt.Errorf("metrics lack %s", want)
		}
		return nil
	})
}

// tcpOpen says whether a TCP connection from a pod to addr is accepted
// within a second.
func tcpOpen(t *testing.T, from, addr string) bool {
	t.Helper()
	_, err := execInFor(t, 5*time.Second, from, "", weftBin(), "testserver", "watch", addr, "--until", "open", "--for", "1s", "--timeout", "200ms")
	return err == nil
}

func wantOpen(t *testing.T, from, addr string, want bool) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%s → %s open=%v", from, addr, want), func() error {
		if got := tcpOpen(t, from, addr); got != want {
			return fmt.Errorf("open=%v", got)
		}
		return nil
	})
}

// A named port resolves per pod (web is 8080 on one server, 9090 on the
// other); endPort allows a range and nothing past it.
func TestNetworkPolicyNamedPortsAndEndPort(t *testing.T) {
	ns := newNamespace(t)
	a, b := pinnedPod(ns, "server-a", "weft-node-1"), pinnedPod(ns, "server-b", "weft-node-2")
	a.Labels["role"], b.Labels["role"] = "web", "web"
	a.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "web", ContainerPort: 8080}}
	b.Spec.Containers[0].Args = []string{"--http-port=9090"}
	b.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "web", ContainerPort: 9090}}
	b.Spec.Containers[0].ReadinessProbe.TCPSocket.Port = intstr.FromInt32(9090)
	pods := createReady(t, a, b, pinnedPod(ns, "client", "weft-node-3"))
	from := ns + "/client"
	ipA, ipB := ip(pods["server-a"]), ip(pods["server-b"])

	tcp := corev1.ProtocolTCP
	named := netpol(ns, "web-only", map[string]string{"role": "web"}, polIngress)
	named.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptr.To(intstr.FromString("web"))}}}}
	createPolicy(t, named)
	wantOpen(t, from, ipA+":8080", true)
	wantOpen(t, from, ipB+":9090", true)
	wantOpen(t, from, ipA+":8081", false) // the echo port is not "web"
	wantOpen(t, from, ipB+":8081", false)
	deletePolicy(t, ns, "web-only")

	ranged := netpol(ns, "range", map[string]string{"app": "server-a"}, polIngress)
	ranged.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
		{Protocol: &tcp, Port: ptr.To(intstr.FromInt32(8079)), EndPort: ptr.To[int32](8080)}}}}
	createPolicy(t, ranged)
	wantOpen(t, from, ipA+":8080", true)
	wantOpen(t, from, ipA+":8081", false)
	ranged.Spec.Ingress[0].Ports[0].EndPort = ptr.To[int32](8081)
	if _, err := client.NetworkingV1().NetworkPolicies(ns).Update(context.Background(), ranged, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wantOpen(t, from, ipA+":8081", true)
}
