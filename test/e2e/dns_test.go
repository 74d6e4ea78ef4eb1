//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"weft.dev/weft/internal/lab"
)

// dig runs dig in a pod (through the pod's resolv.conf) and returns the
// short answer lines, sorted.
func dig(t *testing.T, pod string, args ...string) []string {
	t.Helper()
	out, err := execIn(t, pod, "", append([]string{"dig", "+short", "+time=2", "+tries=2"}, args...)...)
	if err != nil {
		t.Fatalf("dig %v in %s: %v", args, pod, err)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, ";") {
			lines = append(lines, l)
		}
	}
	sort.Strings(lines)
	return lines
}

func digStatus(t *testing.T, pod string, args ...string) string {
	t.Helper()
	out, _ := execIn(t, pod, "", append([]string{"dig", "+time=2", "+tries=2"}, args...)...)
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, "status: "); i >= 0 {
			return strings.TrimRight(strings.Fields(l[i+len("status: "):])[0], ",")
		}
	}
	return "no answer: " + out
}

func eventuallyDig(t *testing.T, pod string, want []string, args ...string) {
	t.Helper()
	eventually(t, 20*time.Second, fmt.Sprintf("dig %v = %v", args, want), func() error {
		if got := dig(t, pod, args...); strings.Join(got, "|") != strings.Join(want, "|") {
			return fmt.Errorf("got %v", got)
		}
		return nil
	})
}

// Cluster DNS from pods through their resolv.conf (the node-local cache):
// services across namespaces, headless services with hostnames, SRV, PTR,
// ExternalName, pod records, upstream names, and a truncated answer that
// needs TCP.
func TestClusterDNSFromPods(t *testing.T) {
	ctx := context.Background()
	clientNS := newNamespace(t)
	ns := newNamespace(t)
	// A client pod in one namespace, servers in another.
	cli := createReady(t, pinnedPod(clientNS, "client", "weft-node-1"))["client"]
	pod := clientNS + "/client"
	if rc, _ := execIn(t, pod, "", "cat", "/etc/resolv.conf"); !strings.Contains(rc, "nameserver "+lab.NodeLocalDNS) ||
		!strings.Contains(rc, "search "+clientNS+".svc.cluster.local svc.cluster.local cluster.local") {
		t.Fatalf("resolv.conf:\n%s", rc)
	}

	web := createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "db"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}})
	createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "db"},
			Ports: []corev1.ServicePort{{Name: "pg", Port: 5432, TargetPort: intstr.FromInt32(8080)}}}})
	createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ext", Namespace: ns},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "www.outside.test"}})
	var dbPods []*corev1.Pod
	for i, node := range []string{"weft-node-2", "weft-node-3"} {
		p := pinnedPod(ns, fmt.Sprintf("db-%d", i), node)
		p.Labels = map[string]string{"app": "db"}
		p.Spec.Hostname, p.Spec.Subdomain = fmt.Sprintf("db-%d", i), "db"
		dbPods = append(dbPods, p)
	}
	got := createReady(t, dbPods...)
	ip0, ip1 := got["db-0"].Status.PodIP, got["db-1"].Status.PodIP
	sorted := []string{ip0, ip1}
	sort.Strings(sorted)

	// ClusterIP service in another namespace, through the search path.
	eventuallyDig(t, pod, []string{web.Spec.ClusterIP}, "+search", "web."+ns)
	if out, err := execIn(t, pod, "", "getent", "hosts", "web."+ns); err != nil || !strings.HasPrefix(out, web.Spec.ClusterIP+" ") {
		t.Errorf("getent hosts web.%s: %q %v", ns, out, err)
	}
	// Headless: every ready endpoint; hostname.subdomain names each pod.
	eventuallyDig(t, pod, sorted, "db."+ns+".svc.cluster.local")
	if a := dig(t, pod, "+search", "db-1.db."+ns); len(a) != 1 || a[0] != ip1 {
		t.Errorf("db-1.db.%s: %v, want %s", ns, a, ip1)
	}
	// SRV for a named port: ClusterIP (target = service) and headless (one per pod).
	if a := dig(t, pod, "SRV", "_http._tcp.web."+ns+".svc.cluster.local"); len(a) != 1 || a[0] != "0 100 80 web."+ns+".svc.cluster.local." {
		t.Errorf("ClusterIP SRV: %v", a)
	}
	// Headless SRV carries the endpoint (target) port.
	want := []string{"0 50 8080 db-0.db." + ns + ".svc.cluster.local.", "0 50 8080 db-1.db." + ns + ".svc.cluster.local."}
	if a := dig(t, pod, "SRV", "_pg._tcp.db."+ns+".svc.cluster.local"); strings.Join(a, "|") != strings.Join(want, "|") {
		t.Errorf("headless SRV: %v, want %v", a, want)
	}
	// PTR for a service IP and for a headless endpoint.
	if a := dig(t, pod, "-x", web.Spec.ClusterIP); len(a) != 1 || a[0] != "web."+ns+".svc.cluster.local." {
		t.Errorf("PTR %s: %v", web.Spec.ClusterIP, a)
	}
	if a := dig(t, pod, "-x", ip0); len(a) != 1 || a[0] != "db-0.db."+ns+".svc.cluster.local." {
		t.Errorf("PTR %s: %v", ip0, a)
	}
	// ExternalName: CNAME, chased to the upstream's address.
	if a := dig(t, pod, "ext."+ns+".svc.cluster.local"); strings.Join(a, "|") != "203.0.113.10|www.outside.test." {
		t.Errorf("ExternalName: %v", a)
	}
	// Pod records, for real pods only.
	podName := strings.ReplaceAll(cli.Status.PodIP, ".", "-") + "." + clientNS + ".pod.cluster.local"
	if a := dig(t, pod, podName); len(a) != 1 || a[0] != cli.Status.PodIP {
		t.Errorf("pod record %s: %v", podName, a)
	}
	if s := digStatus(t, pod, "10-1-2-3."+clientNS+".pod.cluster.local"); s != "NXDOMAIN" {
		t.Errorf("pod record for no pod: %s", s)
	}
	// NXDOMAIN vs NOERROR without data.
	if s := digStatus(t, pod, "nope."+ns+".svc.cluster.local"); s != "NXDOMAIN" {
		t.Errorf("missing service: %s", s)
	}
	if s := digStatus(t, pod, "AAAA", "web."+ns+".svc.cluster.local"); s != "NOERROR" {
		t.Errorf("AAAA of an IPv4 service: %s", s)
	}
	// Upstream names, and an answer too big for UDP (dig retries over TCP).
	if a := dig(t, pod, "www.outside.test"); len(a) != 1 || a[0] != "203.0.113.10" {
		t.Errorf("upstream name: %v", a)
	}
	if a := dig(t, pod, "TXT", "big.outside.test"); len(a) != 30 {
		t.Errorf("big TXT: %d records, want 30", len(a))
	}
	if s := digStatus(t, pod, "missing.outside.test"); s != "NXDOMAIN" {
		t.Errorf("upstream NXDOMAIN: %s", s)
	}
	// Deleting a service removes its name.
	if err := client.CoreV1().Services(ns).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 40*time.Second, "deleted service gone from DNS", func() error {
		// The node-local cache may hold the old answer for its TTL (5 s).
		if s := digStatus(t, pod, "web."+ns+".svc.cluster.local"); s != "NXDOMAIN" {
			return fmt.Errorf("status %s", s)
		}
		return nil
	})
}

// The node-local cache answers without conntrack, and keeps answering
// names it has seen while every cluster DNS pod is gone.
func TestNodeLocalDNSCacheSurvivesClusterDNSRestart(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	createReady(t, pinnedPod(ns, "client", "weft-node-2"))
	pod := ns + "/client"
	names := []string{"kubernetes.default.svc.cluster.local", "www.outside.test"}
	for _, n := range names {
		if a := dig(t, pod, n); len(a) != 1 {
			t.Fatalf("%s: %v", n, a)
		}
	}
	// Pod DNS to the node-local address is not tracked.
	if out, err := execIn(t, "weft-node-2", "", "conntrack", "-L", "-d", lab.NodeLocalDNS); err != nil || strings.Contains(out, "dport=53") {
		t.Errorf("conntrack entries for the node-local listener: %q %v", out, err)
	}

	scale := func(n int32) {
		t.Helper()
		s, err := client.AppsV1().Deployments("kube-system").GetScale(ctx, lab.DNSName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Spec.Replicas = n
		if _, err := client.AppsV1().Deployments("kube-system").UpdateScale(ctx, lab.DNSName, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	scale(0)
	t.Cleanup(func() {
		scale(lab.DNSReplicas)
		_, _ = lab.WaitPodsReady(ctx, client, "kube-system", "k8s-app=kube-dns", lab.DNSReplicas, 2*time.Minute)
	})
	eventually(t, 60*time.Second, "cluster DNS pods gone", func() error {
		pods, err := client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=kube-dns"})
		if err != nil || len(pods.Items) != 0 {
			return fmt.Errorf("%d pods left (%v)", len(pods.Items), err)
		}
		return nil
	})
	// Past the 5 s TTL of cluster names the cache serves stale answers
	// rather than failing.
	time.Sleep(7 * time.Second)
	for _, n := range names {
		if a := dig(t, pod, n); len(a) != 1 {
			t.Errorf("%s with cluster DNS down: %v", n, a)
		}
	}
	if s := digStatus(t, pod, "never-asked.default.svc.cluster.local"); s != "SERVFAIL" {
		t.Errorf("uncached name with cluster DNS down: %s, want SERVFAIL", s)
	}
	out, err := execIn(t, "weft-node-2", "", "curl", "-sS", "http://"+nodeByName(t, "weft-node-2").Status.Addresses[0].Address+":9402/metrics")
	if err != nil || !strings.Contains(out, `weft_dns_cache_lookups_total{result="stale",server="node-local"}`) {
		t.Errorf("stale lookups not in the agent's metrics: %v", err)
	}
}
