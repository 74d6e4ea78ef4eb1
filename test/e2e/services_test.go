//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"weft.dev/weft/internal/lab"
	"weft.dev/weft/internal/routing"
)

// Services through weft's nftables proxy, with real packets: ClusterIP
// from pods on other nodes (source kept) and from nodes, NodePort from the
// outside namespace, a service without endpoints refused at once, and the
// kubernetes service reaching the API server.
func TestServicesClusterIPNodePortReject(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	backends := deployWeb(t, ns, 3)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}}
	svc, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	empty := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "empty", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "nothing"}, Ports: []corev1.ServicePort{{Port: 80}}}}
	empty, err = client.CoreV1().Services(ns).Create(ctx, empty, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clientPod := pinnedPod(ns, "client", "weft-node-3")
	clientPod.Labels = map[string]string{"role": "client"}
	c := createReady(t, clientPod)["client"]
	vip := svc.Spec.ClusterIP

	// Every backend is reached, and each sees the client pod's own IP.
	seen := map[string]bool{}
	eventually(t, 30*time.Second, "all backends reached through the ClusterIP", func() error {
		out, err := execIn(t, ns+"/client", "", "curl", "-sS", "-m", "2", "http://"+vip+"/hostname")
		if err == nil {
			seen[out] = true
		}
		if len(seen) < len(backends) {
			return fmt.Errorf("seen %v", seen)
		}
		return nil
	})
	if got := curl(t, ns+"/client", "http://"+vip+"/clientip"); got != c.Status.PodIP {
		t.Errorf("backend saw %q through the ClusterIP, want the client pod IP %s", got, c.Status.PodIP)
	}
	// From a node (nat output hook).
	if out, err := execIn(t, "weft-node-1", "", "curl", "-sS", "-m", "3", "http://"+vip+"/hostname"); err != nil || !strings.HasPrefix(out, "web-") {
		t.Errorf("ClusterIP from a node: %q %v", out, err)
	}
	// NodePort from the outside namespace, on every worker.
	np := svc.Spec.Ports[0].NodePort
	for _, n := range workers(t) {
		if n.name == lab.ControlPlane {
			continue
		}
		out, err := execIn(t, "outside", "", "curl", "-sS", "-m", "3", fmt.Sprintf("http://%s:%d/hostname", n.ip, np))
		if err != nil || !strings.HasPrefix(out, "web-") {
			t.Errorf("NodePort %d on %s from outside: %q %v", np, n.name, out, err)
		}
	}
	// NodePorts are served on node addresses only (--nodeport-addresses
	// default, as kube-proxy's nftables mode): weft-node-1's VXLAN device
	// address answers, but with a refusal, not the service.
	vtep := routing.VTEPAddress(routing.PeerFromNode(nodeByName(t, "weft-node-1")).PodCIDRs).String()
	if out, err := execIn(t, ns+"/client", "", "curl", "-sS", "-m", "3", fmt.Sprintf("http://%s:%d/hostname", vtep, np)); !refused(err) {
		t.Errorf("NodePort on the VXLAN device address %s: %q %v, want connection refused", vtep, out, err)
	}
	// No endpoints: connection refused at once.
	start := time.Now()
	out, err := execIn(t, ns+"/client", "", "curl", "-sS", "-m", "5", "http://"+empty.Spec.ClusterIP+"/")
	if !refused(err) {
		t.Errorf("service without endpoints: %q %v, want connection refused", out, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("reject took %s (a timeout, not a refusal)", d)
	}
	// An unallocated IP in the service range is dropped by the proxy (a
	// timeout, exit 28), not routed on towards the router (which would
	// answer "no route", exit 7).
	unallocated := "10.96.255.254"
	all, err := client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range all.Items {
		if s.Spec.ClusterIP == unallocated {
			unallocated = "10.96.255.253" // held by chance (both held: vanishingly unlikely)
		}
	}
	if out, err := execIn(t, ns+"/client", "", "curl", "-sS", "-m", "2", "http://"+unallocated+"/"); err == nil || !strings.Contains(err.Error(), "exit status 28") {
		t.Errorf("unallocated service IP: %q %v, want a timeout (dropped)", out, err)
	}
	// The kubernetes service reaches the API server.
	if out, err := execIn(t, ns+"/client", "", "curl", "-sSk", "-m", "3", "https://10.96.0.1/healthz"); err != nil || out != "ok" {
		t.Errorf("kubernetes service: %q %v", out, err)
	}
	// Scale to zero: the ClusterIP starts refusing.
	scale, err := client.AppsV1().Deployments(ns).GetScale(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 0
	if _, err := client.AppsV1().Deployments(ns).UpdateScale(ctx, "web", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "refused after scaling to zero", func() error {
		_, err := execIn(t, ns+"/client", "", "curl", "-sS", "-m", "2", "http://"+vip+"/hostname")
		if !refused(err) {
			return fmt.Errorf("got %v", err)
		}
		return nil
	})
}

// refused reports curl's "connection refused" (exit 7, "Couldn't connect
// to server" after 0 ms), as opposed to a timeout (exit 28).
func refused(err error) bool {
	if err == nil || !strings.Contains(err.Error(), "exit status 7") {
		return false
	}
	// Answered at once ("after 0 ms" on a quiet machine; a busy one takes
	// a few): a timeout would be exit 28.
	m := regexp.MustCompile(`after (\d+) ms`).FindStringSubmatch(err.Error())
	if m == nil {
		return false
	}
	n, _ := strconv.Atoi(m[1])
	return n < 1000
}
