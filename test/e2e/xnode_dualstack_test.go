//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"weft.dev/weft/internal/lab"
	"weft.dev/weft/internal/routing"
)

// A dual-stack lab (`weft lab up --dual-stack`, VXLAN across two racks):
// every pod gets an IPv4 and an IPv6 address from its node's pod CIDRs;
// pods reach each other over IPv6 across racks with their source kept; a
// RequireDualStack Service answers on both ClusterIPs (source kept) and on
// its NodePort at a node's IPv6 address; an IPv6 ClusterIP without
// endpoints refuses at once; each node runs both proxy tables.
func TestDualStack(t *testing.T) {
	relab(t, lab.UpOptions{Workers: 3, Racks: 2, Backend: "vxlan", DualStack: true})
	ctx := context.Background()
	ns := newNamespace(t)
	pods := daemonSet(t, ns)
	v6 := func(p corev1.Pod) string {
		for _, ip := range p.Status.PodIPs {
			if a := net.ParseIP(ip.IP); a != nil && a.To4() == nil {
				return ip.IP
			}
		}
		return ""
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node6 := map[string]string{}
	for _, n := range nodes.Items {
		if len(n.Spec.PodCIDRs) != 2 {
			t.Fatalf("%s: podCIDRs %v, want one per family", n.Name, n.Spec.PodCIDRs)
		}
		p := routing.PeerFromNode(&n)
		if p.NodeIP6 == nil {
			t.Fatalf("%s has no IPv6 InternalIP: %v", n.Name, n.Status.Addresses)
		}
		node6[n.Name] = p.NodeIP6.String()
	}
	podCIDR6 := map[string]*net.IPNet{}
	for _, n := range nodes.Items {
		_, c, _ := net.ParseCIDR(n.Spec.PodCIDRs[1])
		podCIDR6[n.Name] = c
	}
	for _, p := range pods {
		ip := net.ParseIP(v6(p))
		if len(p.Status.PodIPs) != 2 || ip == nil || !podCIDR6[p.Spec.NodeName].Contains(ip) {
			t.Fatalf("pod %s on %s: podIPs %v, want IPv4 and IPv6 (in %s)", p.Name, p.Spec.NodeName, p.Status.PodIPs, podCIDR6[p.Spec.NodeName])
		}
	}
	// Pod × pod over IPv6, source kept.
	for _, a := range pods {
		for _, b := range pods {
			if a.Name == b.Name {
				continue
			}
			out, err := execIn(t, ns+"/"+a.Name, "", "curl", "-sS", "-m", "3", "http://"+net.JoinHostPort(v6(b), "8080")+"/clientip")
			if err != nil || out != v6(a) {
				t.Errorf("%s → %s over IPv6: %q %v, want source %s", a.Spec.NodeName, b.Spec.NodeName, out, err, v6(a))
			}
		}
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ds", Namespace: ns},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyRequireDualStack),
			Selector: map[string]string{"app": "ds"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	svc, err = client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	empty := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "empty", Namespace: ns},
		Spec: corev1.ServiceSpec{IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyRequireDualStack), Selector: map[string]string{"app": "none"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	empty, err = client.CoreV1().Services(ns).Create(ctx, empty, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Spec.ClusterIPs) != 2 || len(empty.Spec.ClusterIPs) != 2 {
		t.Fatalf("clusterIPs %v %v, want one per family", svc.Spec.ClusterIPs, empty.Spec.ClusterIPs)
	}
	client0 := pods[0]
	for _, cip := range svc.Spec.ClusterIPs {
		want := client0.Status.PodIP
		if net.ParseIP(cip).To4() == nil {
			want = v6(client0)
		}
		url := "http://" + net.JoinHostPort(cip, "80") + "/clientip"
		eventually(t, 20*time.Second, "ClusterIP "+cip, func() error {
			out, err := execIn(t, ns+"/"+client0.Name, "", "curl", "-sS", "-m", "3", url)
			if err != nil || out != want {
				return fmt.Errorf("%q %v, want source %s", out, err, want)
			}
			return nil
		})
	}
	// NodePort on every node's IPv6 address, from a node in the other rack.
	np := fmt.Sprint(svc.Spec.Ports[0].NodePort)
	for name, ip := range node6 {
		eventually(t, 20*time.Second, "NodePort on "+name+" IPv6", func() error {
			out, err := execIn(t, "weft-node-3", "", "curl", "-sS", "-m", "3", "http://"+net.JoinHostPort(ip, np)+"/hostname")
			if err != nil || !strings.HasPrefix(out, "ds-") {
				return fmt.Errorf("%q %v", out, err)
			}
			return nil
		})
	}
	// No endpoints: refused at once over IPv6 too.
	url6 := "http://" + net.JoinHostPort(empty.Spec.ClusterIPs[1], "80") + "/"
	eventually(t, 20*time.Second, "IPv6 ClusterIP without endpoints refuses", func() error {
		start := time.Now()
		_, err := execIn(t, ns+"/"+client0.Name, "", "curl", "-sS", "-m", "3", url6)
		if !refused(err) || time.Since(start) > 2*time.Second {
			return fmt.Errorf("%v after %v", err, time.Since(start))
		}
		return nil
	})
	for _, n := range nodes.Items {
		out, err := exec.Command("ip", "netns", "exec", n.Name, "nft", "list", "tables").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "table inet weft-proxy6") || !strings.Contains(string(out), "table inet weft-proxy\n") {
			t.Errorf("%s: proxy tables %q %v, want weft-proxy and weft-proxy6", n.Name, out, err)
		}
	}
}
