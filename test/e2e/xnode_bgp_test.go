//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"weft.dev/weft/internal/lab"
)

// TestCrossNodeBGP: backend bgp with BIRD as the racks' router. Pods are
// routed natively (no tunnel device; each pod CIDR in the router's table
// as learned by BGP), the pod matrix works across racks, LoadBalancer
// addresses are reachable from the outside namespace through the router,
// externalTrafficPolicy Local is announced only where an endpoint is, a
// bad BGPPeer is reported without disturbing the others, an agent restart
// keeps routes and streams (graceful restart), and a dead node's routes
// go within the hold time, and within a second with BFD.
//
// WEFT_BGP_ROUTERS (comma-separated, default "bird,frr") picks the routers:
// make test runs BIRD alone, make e2e-frr FRR.
func TestCrossNodeBGP(t *testing.T) {
	routers := []string{lab.RouterBIRD, lab.RouterFRR}
	if v := os.Getenv("WEFT_BGP_ROUTERS"); v != "" {
		routers = strings.Split(v, ",")
	}
	for _, router := range routers {
		t.Run(router, func(t *testing.T) { bgpWithRouter(t, router) })
	}
}

func bgpWithRouter(t *testing.T, router string) {
	relab(t, lab.UpOptions{Workers: 4, Racks: 2, Backend: "bgp", Router: router})
	ws := workers(t)
	eventually(t, 30*time.Second, "every pod CIDR in the router's table via its node", func() error {
		return routerHasPodCIDRs(ws)
	})
	for _, n := range ws {
		if out, err := exec.Command("ip", "-n", n.name, "link", "show", "type", "vxlan").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("%s has a tunnel device with bgp: %s %v", n.name, out, err)
		}
	}
	eventually(t, 30*time.Second, "every node routes every other pod CIDR", func() error { return nodeRoutesConverged(t, ws) })
	ns := newNamespace(t)
	pods := daemonSet(t, ns)
	reachability(t, pods, false)

	t.Run("LoadBalancer from outside", func(t *testing.T) { bgpLoadBalancer(t, ns) })
	t.Run("ingress from outside", func(t *testing.T) { bgpIngress(t, ns) })
	t.Run("externalTrafficPolicy Local", func(t *testing.T) { bgpLocalPolicy(t, ns) })
	t.Run("invalid peer", func(t *testing.T) { bgpInvalidPeer(t, ws) })
	t.Run("graceful restart", func(t *testing.T) { bgpGracefulRestart(t, ns, pods) })
	t.Run("dead node", func(t *testing.T) { bgpDeadNode(t, ws) })
	t.Run("route reflectors", func(t *testing.T) { bgpRouteReflectors(t, pods) })
	t.Run("mesh without routers", func(t *testing.T) { bgpMeshOnly(t, pods) })
}

func patchBGP(t *testing.T, plural, name string, patch map[string]any) {
	t.Helper()
	b, _ := json.Marshal(patch)
	err := client.Discovery().RESTClient().Patch(types.MergePatchType).AbsPath("/apis/bgp.weft.dev/v1alpha1", plural, name).Body(b).Do(context.Background()).Error()
	if err != nil {
		t.Fatal(err)
	}
}

// bgpSessions lists the addresses a node has BGP sessions with.
func bgpSessions(t *testing.T, node string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", node, "ss", "-Htn", "state", "established", "( sport = :179 or dport = :179 )").CombinedOutput()
	if err != nil {
		t.Fatalf("ss on %s: %v %s", node, err, out)
	}
	var peers []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) >= 4 {
			host := f[3][:strings.LastIndex(f[3], ":")]
			peers = append(peers, host)
		}
	}
	sort.Strings(peers)
	return peers
}

// bgpRouteReflectors: one node reflects; the others peer with it and
// their rack router only, and every route is still there.
func bgpRouteReflectors(t *testing.T, pods []corev1.Pod) {
	ws := workers(t)
	rr, clientNode := ws[1], ws[len(ws)-1]
	defer func() {
		if t.Failed() {
			logBGPState(t, rr.name, clientNode.name)
		}
	}()
	label, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{"e2e.weft.dev/route-reflector": "true"}}})
	if _, err := client.CoreV1().Nodes().Patch(context.Background(), rr.name, types.MergePatchType, label, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	patchBGP(t, "bgpconfigurations", "default", map[string]any{"spec": map[string]any{
		"routeReflectorSelector": map[string]any{"matchLabels": map[string]string{"e2e.weft.dev/route-reflector": "true"}}}})
	want := []string{rr.ip, lab.RackGateway(rackNum(clientNode.rack)).String()}
	sort.Strings(want)
	eventually(t, 30*time.Second, clientNode.name+" peers with the reflector and its router only", func() error {
		if got := bgpSessions(t, clientNode.name); strings.Join(got, ",") != strings.Join(want, ",") {
			return fmt.Errorf("sessions %v, want %v", got, want)
		}
		return nodeRoutesConverged(t, ws)
	})
	reachability(t, pods, false)
	patchBGP(t, "bgpconfigurations", "default", map[string]any{"spec": map[string]any{"routeReflectorSelector": nil}})
	eventually(t, 30*time.Second, "full mesh again", func() error {
		if got := bgpSessions(t, clientNode.name); len(got) != len(ws) {
			return fmt.Errorf("%s has sessions with %v, want the %d other nodes and its router", clientNode.name, got, len(ws)-1)
		}
		return nodeRoutesConverged(t, ws)
	})
}

// bgpMeshOnly: no BGPPeer selects a node: the nodes route to each other
// in a rack through the mesh alone; across racks nothing routes (the
// router learns nothing), as host-gw.
func bgpMeshOnly(t *testing.T, pods []corev1.Pod) {
	ws := workers(t)
	for r := 0; r < 2; r++ {
		patchBGP(t, "bgppeers", lab.RackName(r), map[string]any{"spec": map[string]any{"nodeSelector": map[string]any{"matchLabels": map[string]string{"e2e.weft.dev/none": "x"}}}})
	}
	eventually(t, 30*time.Second, "router without pod routes", func() error {
		for _, n := range ws {
			if r := routerRoute(n.podCIDR); r != "" {
				return fmt.Errorf("router still routes %s: %q", n.podCIDR, r)
			}
		}
		return nil
	})
	reachability(t, pods, true)
	for r := 0; r < 2; r++ {
		// A merge patch merges maps: null removes the key added above.
		patchBGP(t, "bgppeers", lab.RackName(r), map[string]any{"spec": map[string]any{"nodeSelector": map[string]any{"matchLabels": map[string]any{"e2e.weft.dev/none": nil}}}})
	}
	eventually(t, 30*time.Second, "routers back", func() error { return routerHasPodCIDRs(ws) })
}

// nodeRoutesConverged: in a rack, a peer's pod CIDR is routed via the
// peer; across racks via the node's rack router (the recursive next hop).
func nodeRoutesConverged(t *testing.T, ws []labNode) error {
	for _, n := range ws {
		routes := routesOn(t, n.name)
		for _, peer := range ws {
			if peer.name == n.name {
				continue
			}
			l, via := routeLine(routes, peer.podCIDR), "via "+peer.ip+" dev eth0"
			if peer.rack != n.rack {
				via = "via " + lab.RackGateway(rackNum(n.rack)).String() + " dev eth0"
			}
			if !strings.Contains(l, via) {
				return fmt.Errorf("%s → %s: route %q, want %s", n.name, peer.name, l, via)
			}
		}
	}
	return nil
}

// rackNum: "rack-b" → 1.
func rackNum(zone string) int { return int(zone[len(zone)-1] - 'a') }

func routerRoute(cidr string) string { return lab.RouterRoute(cidr) }

func routerHasPodCIDRs(ws []labNode) error {
	for _, n := range ws {
		r := routerRoute(n.podCIDR)
		if !strings.Contains(r, "via "+n.ip+" ") || !(strings.Contains(r, "proto bird") || strings.Contains(r, "proto bgp")) {
			return fmt.Errorf("router route to %s (%s): %q, want via %s learned by BGP", n.podCIDR, n.name, r, n.ip)
		}
	}
	return nil
}

func lbService(t *testing.T, ns, name string, sel map[string]string, local bool) string {
	t.Helper()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: sel,
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	if local {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	if _, err := client.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var ip string
	eventually(t, 30*time.Second, "LoadBalancer address", func() error {
		s, err := client.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil || len(s.Status.LoadBalancer.Ingress) == 0 {
			return fmt.Errorf("no address yet (%v)", err)
		}
		ip = s.Status.LoadBalancer.Ingress[0].IP
		return nil
	})
	return ip
}

func bgpLoadBalancer(t *testing.T, ns string) {
	ip := lbService(t, ns, "lb", map[string]string{"app": "ds"}, false)
	eventually(t, 20*time.Second, "outside → "+ip+" through the router", func() error {
		out, err := execIn(t, "outside", "", "curl", "-sS", "-m", "2", "http://"+ip+"/hostname")
		if err != nil || !strings.HasPrefix(out, "ds-") {
			return fmt.Errorf("got %q %v (router: %q)", out, err, routerRoute(ip))
		}
		return nil
	})
}

// bgpIngress: the outside namespace reaches weft ingress at its
// LoadBalancer address (announced by BGP), not through a NodePort.
func bgpIngress(t *testing.T, ns string) {
	ctx := context.Background()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "ds"}, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	if _, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	prefix := networkingv1.PathTypePrefix
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("weft"),
		Rules: []networkingv1.IngressRule{{Host: "bgp.example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
			Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: &prefix, Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
				Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}}}}}}}}}}
	if _, err := client.NetworkingV1().Ingresses(ns).Create(ctx, ing, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	lb, err := client.CoreV1().Services("kube-system").Get(ctx, "weft-ingress", metav1.GetOptions{})
	if err != nil || len(lb.Status.LoadBalancer.Ingress) == 0 {
		t.Fatalf("weft-ingress without a LoadBalancer address: %v", err)
	}
	ip := lb.Status.LoadBalancer.Ingress[0].IP
	eventually(t, 20*time.Second, "outside → weft ingress at "+ip, func() error {
		out, err := execIn(t, "outside", "", "curl", "-sS", "-m", "2", "-H", "Host: bgp.example.com", "http://"+ip+"/hostname")
		if err != nil || !strings.HasPrefix(out, "ds-") {
			return fmt.Errorf("got %q %v (router: %q)", out, err, routerRoute(ip))
		}
		return nil
	})
}

// bgpLocalPolicy: one endpoint, on one node: only that node announces the
// address; without endpoints nobody does.
func bgpLocalPolicy(t *testing.T, ns string) {
	ctx := context.Background()
	target := workers(t)[1].name
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "local-ep", Namespace: ns, Labels: map[string]string{"app": "local"}},
		Spec: corev1.PodSpec{NodeName: target, Containers: []corev1.Container{{Name: "server", Image: "weft/testserver"}}}}
	if _, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.WaitPodsReady(ctx, client, ns, "app=local", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	ip := lbService(t, ns, "local", map[string]string{"app": "local"}, true)
	nodeIP := ""
	for _, n := range workers(t) {
		if n.name == target {
			nodeIP = n.ip
		}
	}
	eventually(t, 20*time.Second, "only "+target+" announces "+ip, func() error {
		if r := routerRoute(ip); !strings.Contains(r, " via "+nodeIP+" ") || strings.Contains(r, "nexthop") {
			return fmt.Errorf("router: %q", r)
		}
		return nil
	})
	// The announcement follows the EndpointSlice at once, the service
	// proxy after its sync: the first connection may find the address
	// routed but not yet served.
	eventually(t, 10*time.Second, "ETP Local from outside keeps the client's address", func() error {
		out, err := execIn(t, "outside", "", "curl", "-sS", "-m", "5", "http://"+ip+"/clientip")
		if err != nil || out != lab.OutsideIP {
			return fmt.Errorf("client IP %q, want %s: %v", out, lab.OutsideIP, err)
		}
		return nil
	})
	if err := client.CoreV1().Pods(ns).Delete(ctx, "local-ep", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, ip+" withdrawn with its last endpoint", func() error {
		if r := routerRoute(ip); r != "" {
			return fmt.Errorf("router still routes it: %q", r)
		}
		return nil
	})
}

func bgpPeerStatus(t *testing.T, name string) map[string]map[string]string {
	t.Helper()
	raw, err := client.Discovery().RESTClient().Get().AbsPath("/apis/bgp.weft.dev/v1alpha1/bgppeers", name).DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Status struct {
			Nodes map[string]map[string]string `json:"nodes"`
		} `json:"status"`
	}
	_ = json.Unmarshal(raw, &p)
	return p.Status.Nodes
}

// bgpInvalidPeer: a BGPPeer naming a node's address is reported on every
// node it selects; the routers' sessions stay up.
func bgpInvalidPeer(t *testing.T, ws []labNode) {
	ctx := context.Background()
	bad := map[string]any{"apiVersion": "bgp.weft.dev/v1alpha1", "kind": "BGPPeer", "metadata": map[string]any{"name": "e2e-bad"},
		"spec": map[string]any{"peerAddress": ws[0].ip, "peerASN": 65099}}
	if err := lab.CreateBGPObject(ctx, client, bad); err != nil {
		t.Fatal(err)
	}
	defer client.Discovery().RESTClient().Delete().AbsPath("/apis/bgp.weft.dev/v1alpha1/bgppeers", "e2e-bad").Do(ctx)
	eventually(t, 20*time.Second, "every node reports e2e-bad Invalid", func() error {
		st := bgpPeerStatus(t, "e2e-bad")
		for _, n := range ws {
			if st[n.name]["state"] != "Invalid" || !strings.Contains(st[n.name]["message"], "is node") {
				return fmt.Errorf("%s: %v", n.name, st[n.name])
			}
		}
		return nil
	})
	for _, rack := range []string{lab.RackName(0), lab.RackName(1)} {
		for node, s := range bgpPeerStatus(t, rack) {
			if s["state"] != "Established" {
				t.Errorf("%s on %s: %v after a bad peer was added", rack, node, s)
			}
		}
	}
	if err := routerHasPodCIDRs(ws); err != nil {
		t.Error(err)
	}
}

// bgpGracefulRestart: the agent of the server's node restarts while a
// request across racks is in flight; the router keeps the node's routes
// (never withdrawn), the request completes. BFD is off here: a BFD
// session ends with the process that runs it, and the router would take
// that as the node's failure (docs/bgp.md).
func bgpGracefulRestart(t *testing.T, ns string, pods []corev1.Pod) {
	setBFD(t, false)
	var from, server corev1.Pod
	for _, a := range pods {
		for _, b := range pods {
			if nodeRack(a.Spec.NodeName) != nodeRack(b.Spec.NodeName) {
				from, server = a, b
			}
		}
	}
	cidr := ""
	for _, n := range workers(t) {
		if n.name == server.Spec.NodeName {
			cidr = n.podCIDR
		}
	}
	done := make(chan error, 1)
	go func() {
		out, err := execInFor(t, 30*time.Second, ns+"/"+from.Name, "", "curl", "-sS", "-m", "25", "http://"+server.Status.PodIP+":8080/delay/8000")
		if err == nil && out == "" {
			err = fmt.Errorf("empty answer")
		}
		done <- err
	}()
	time.Sleep(time.Second)
	if err := theLab.KillNodeProcess(server.Spec.NodeName, lab.ProcAgent, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	missing := 0
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if routerRoute(cidr) == "" {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("router lost the route to %s in %d of the checks while the agent restarted", cidr, missing)
	}
	if err := <-done; err != nil {
		t.Errorf("request across racks during the agent restart: %v", err)
	}
	eventually(t, 60*time.Second, "agent back, routes resynced", func() error { return routerHasPodCIDRs(workers(t)) })
}

func nodeRack(node string) string {
	for _, n := range theLabNodes() {
		if n.Name == node {
			return lab.RackName(n.Rack)
		}
	}
	return ""
}

func theLabNodes() []lab.Node {
	st, _ := theLab.LoadState()
	if st == nil {
		return nil
	}
	return st.Nodes
}

// setBFD turns BFD on or off on both ends of the router sessions and
// waits for the sessions and the routes to be back.
func setBFD(t *testing.T, on bool) {
	t.Helper()
	if err := theLab.SetRackBFD(context.Background(), client, on); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "router routes every pod CIDR", func() error { return routerHasPodCIDRs(workers(t)) })
}

// bgpDeadNode: the node's link goes down (the node is gone for the
// network); the router withdraws its routes within the hold time without
// BFD and within a second with it.
func bgpDeadNode(t *testing.T, ws []labNode) {
	victim := ws[len(ws)-1]
	// BFD first: once, with the hold-time case first, the router's session
	// with the node stayed down for a minute after a BFD failover followed
	// straight by the node's return (an open bug, noted in issue 16); the
	// reconfiguration between the cases restarts both ends' sessions.
	for _, withBFD := range []bool{true, false} {
		setBFD(t, withBFD)
		start := time.Now()
		if out, err := exec.Command("ip", "-n", victim.name, "link", "set", "eth0", "down").CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		for routerRoute(victim.podCIDR) != "" && time.Since(start) < 30*time.Second {
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(start)
		if out, err := exec.Command("ip", "-n", victim.name, "link", "set", "eth0", "up").CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		_ = exec.Command("ip", "-n", victim.name, "route", "replace", "default", "via", lab.RackGateway(rackNum(victim.rack)).String()).Run()
		limit := time.Duration(lab.RouterHoldTime)*time.Second + time.Second
		if withBFD {
			limit = time.Second
		}
		t.Logf("BFD %v: %s's routes withdrawn by the router after %s (limit %s)", withBFD, victim.name, took.Round(time.Millisecond), limit)
		if took > limit {
			t.Errorf("BFD %v: withdrawn after %s, want within %s", withBFD, took, limit)
		}
		eventually(t, time.Minute, victim.name+"'s routes back at the router", func() error {
			if r := routerRoute(victim.podCIDR); r == "" {
				return fmt.Errorf("no route to %s", victim.podCIDR)
			}
			return nil
		})
	}
	setBFD(t, true)
}

// logBGPState logs what a failed BGP check needs explained: each node's
// kernel routes and its agent's last lines about BGP and BFD.
func logBGPState(t *testing.T, nodes ...string) {
	for _, n := range nodes {
		out, _ := exec.Command("ip", "-n", n, "route").CombinedOutput()
		t.Logf("%s routes:\n%s", n, out)
		path, err := theLab.AgentLog(context.Background(), client, n)
		if err != nil {
			t.Logf("%s agent log: %v", n, err)
			continue
		}
		b, _ := os.ReadFile(path)
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "bgp") || strings.Contains(l, "BGP") || strings.Contains(l, "BFD") {
				lines = append(lines, l)
			}
		}
		lines = lines[max(0, len(lines)-40):]
		t.Logf("%s agent, last BGP/BFD lines:\n%s", n, strings.Join(lines, "\n"))
	}
}
