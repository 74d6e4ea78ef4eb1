//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The API server proxies to pods and services (pods/proxy, services/proxy):
// upstream e2e specs read pod endpoints that way. The API server runs in the
// control-plane node's namespace and reaches pods on other nodes over the pod
// network.
func TestAPIServerProxyToPodsAndServices(t *testing.T) {
	ns := newNamespace(t)
	createReady(t, pinnedPod(ns, "px", "weft-node-2"))
	ctx := context.Background()
	body, err := client.CoreV1().RESTClient().Get().Namespace(ns).Resource("pods").Name("px:8080").
		SubResource("proxy").Suffix("hostname").DoRaw(ctx)
	if err != nil || string(body) != "px" {
		t.Fatalf("pods/proxy /hostname: %q %v", body, err)
	}
	createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "pxs", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "px"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}})
	eventually(t, 20*time.Second, "services/proxy", func() error {
		body, err = client.CoreV1().RESTClient().Get().Namespace(ns).Resource("services").Name("pxs:http").
			SubResource("proxy").Suffix("hostname").DoRaw(ctx)
		if err != nil {
			return err
		}
		if string(body) != "px" {
			t.Fatalf("services/proxy /hostname: %q", body)
		}
		return nil
	})
	// nodes/NAME:10250/proxy/logs/ lists the node's logs, as the kubelet
	// lists /var/log.
	body, err = client.CoreV1().RESTClient().Get().Resource("nodes").Name("weft-node-2:10250").
		SubResource("proxy").Suffix("logs/").DoRaw(ctx)
	if err != nil || !strings.Contains(string(body), "node-weft-node-2.log") {
		t.Errorf("nodes/proxy logs/: %q %v", body, err)
	}
	// A port nobody listens on is an error from the proxy, not a hang.
	if _, err := client.CoreV1().RESTClient().Get().Namespace(ns).Resource("pods").Name("px:9999").
		SubResource("proxy").DoRaw(ctx); err == nil {
		t.Fatal("pods/proxy to a closed port succeeded")
	}
}

// The upstream suite starts only when every node without a control-plane
// taint is schedulable and Ready with its network available, and every
// kube-system pod is Running and Ready: check the lab offers exactly that.
func TestClusterLooksHealthyToUpstreamSuite(t *testing.T) {
	ctx := context.Background()
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	schedulable := 0
	for _, n := range nodes.Items {
		ready := false
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready = true
			}
			if c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionTrue {
				t.Errorf("node %s: NetworkUnavailable", n.Name)
			}
		}
		if !ready {
			t.Errorf("node %s not Ready", n.Name)
		}
		tainted := false
		for _, taint := range n.Spec.Taints {
			if taint.Key != "node-role.kubernetes.io/control-plane" {
				t.Errorf("node %s has taint %s the suite would wait on", n.Name, taint.Key)
			}
			tainted = true
		}
		if !tainted && !n.Spec.Unschedulable {
			schedulable++
		}
		if len(n.Status.Addresses) == 0 || n.Spec.PodCIDR == "" {
			t.Errorf("node %s: addresses %v podCIDR %q", n.Name, n.Status.Addresses, n.Spec.PodCIDR)
		}
	}
	if schedulable < 2 {
		t.Errorf("%d schedulable nodes; the network specs need at least 2", schedulable)
	}
	pods, err := client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		ready := false
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if p.Status.Phase != corev1.PodRunning || !ready {
			t.Errorf("kube-system pod %s: phase %s ready %v", p.Name, p.Status.Phase, ready)
		}
	}
	if sa, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil || !strings.EqualFold(sa.Name, "default") {
		t.Errorf("default service account: %v", err)
	}
}
