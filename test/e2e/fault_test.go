//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"weft.dev/weft/internal/lab"
)

// serviceTraffic runs requests from a pod to every URL in turn for d and
// returns how many succeeded and failed (each request has 2 s). It enters
// the pod through its container spec, not the API, so it works while the
// API server is down.
func serviceTraffic(t *testing.T, from *corev1.Pod, d time.Duration, urls ...string) (ok, failed int) {
	t.Helper()
	script := fmt.Sprintf(`ok=0; fail=0; end=$(( $(date +%%s) + %d )); while [ $(date +%%s) -lt $end ]; do
for u in %s; do if curl -sf -m 2 -o /dev/null "$u"; then ok=$((ok+1)); else fail=$((fail+1)); fi; done; sleep 0.05; done; echo $ok $fail`,
		int(d.Seconds()), strings.Join(urls, " "))
	spec := filepath.Join(theLab.NodeDir(from.Spec.NodeName), "pods", string(from.UID), from.Spec.Containers[0].Name+".spec.json")
	cmd := exec.Command(repoRoot+"/bin/weft", "lab", "run-container", "--spec", spec, "--", "sh", "-c", script)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	b, err := cmd.Output()
	out := strings.TrimSpace(string(b))
	if err != nil {
		t.Fatalf("traffic loop: %v %s", err, out)
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		t.Fatalf("traffic loop said %q", out)
	}
	ok, _ = strconv.Atoi(f[0])
	failed, _ = strconv.Atoi(f[1])
	return ok, failed
}

// webService serves the web pods on a NodePort Service and returns the
// ClusterIP and NodePort URLs (the NodePort on weft-node-2).
func webService(t *testing.T, ns, name string) []string {
	t.Helper()
	svc := createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}})
	nodeIP := nodeByName(t, "weft-node-2").Status.Addresses[0].Address
	return []string{"http://" + svc.Spec.ClusterIP + "/hostname", fmt.Sprintf("http://%s:%d/hostname", nodeIP, svc.Spec.Ports[0].NodePort)}
}

// Every agent killed with SIGKILL and restarted under ClusterIP and NodePort
// traffic: the datapath stays in the kernel, no request fails.
func TestFaultAgentKill9UnderServiceTraffic(t *testing.T) {
	ns := newNamespace(t)
	deployWeb(t, ns, 3)
	cli := createReady(t, pinnedPod(ns, "client", "weft-node-1"))["client"]
	urls := webService(t, ns, "web")
	eventually(t, 20*time.Second, "service reachable", func() error {
		_, err := execIn(t, ns+"/client", "", "curl", "-sf", "-m", "2", urls[0])
		return err
	})
	nodes := []string{"weft-node-1", "weft-node-2", "weft-node-3", "weft-node-4"}
	go func() {
		time.Sleep(2 * time.Second)
		for _, n := range nodes {
			if err := theLab.KillNodeProcess(n, lab.ProcAgent, syscall.SIGKILL); err != nil {
				t.Errorf("kill agent on %s: %v", n, err)
			}
		}
		time.Sleep(time.Second)
		for _, n := range nodes {
			if err := theLab.StartNodeProcess(n, lab.ProcAgent); err != nil {
				t.Errorf("restart agent on %s: %v", n, err)
			}
		}
	}()
	ok, failed := serviceTraffic(t, cli, 10*time.Second, urls...)
	t.Logf("%d requests succeeded, %d failed across the agents' kill -9 and restart", ok, failed)
	if failed != 0 || ok == 0 {
		t.Fatalf("%d requests failed (%d succeeded)", failed, ok)
	}
}

// The API server down for 60 s under service traffic: the datapath stays
// as it was and no request fails; once the API server is back, a new
// Service is served within 5 s.
func TestFaultAPIServerDown(t *testing.T) {
	ns := newNamespace(t)
	web := deployWeb(t, ns, 3)
	cli := createReady(t, pinnedPod(ns, "client", "weft-node-1"))["client"]
	urls := webService(t, ns, "web")
	eventually(t, 20*time.Second, "service reachable", func() error {
		_, err := execIn(t, ns+"/client", "", "curl", "-sf", "-m", "2", urls[0])
		return err
	})
	if err := theLab.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			_ = theLab.StartAPIServer()
		}
	}()
	ok, failed := serviceTraffic(t, cli, 60*time.Second, urls...)
	t.Logf("API server down 60 s: %d requests succeeded, %d failed", ok, failed)
	if failed != 0 || ok == 0 {
		t.Errorf("%d requests failed while the API server was down (%d succeeded)", failed, ok)
	}
	if err := theLab.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	// Back means ready: a freshly started API server refuses Services
	// ("range is full") until its service IP allocator has synced.
	eventually(t, 90*time.Second, "API server ready", func() error {
		_, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		return err
	})
	// A Service with its own EndpointSlice: what weft does with it does not
	// wait for kube-controller-manager, which backs off on its own.
	// Its return is when it takes the write (the service IP allocator may
	// lag /readyz a little).
	var svc *corev1.Service
	eventually(t, 30*time.Second, "Service created", func() error {
		var err error
		svc, err = client.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "after", Namespace: ns},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}, metav1.CreateOptions{})
		return err
	})
	back := time.Now()
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "after-1", Namespace: ns,
		Labels: map[string]string{discoveryv1.LabelServiceName: "after"}}, AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}}}
	for _, p := range web {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{p.Status.PodIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	if _, err := client.DiscoveryV1().EndpointSlices(ns).Create(context.Background(), es, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	url := "http://" + svc.Spec.ClusterIP + "/hostname"
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := execIn(t, ns+"/client", "", "curl", "-sf", "-m", "1", url)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			table, _ := hostCommand("ip", "netns", "exec", "weft-node-1", "nft", "list", "map", "inet", "weft-proxy", "service-ips")
			t.Fatalf("new Service not served 60 s after the API server returned: %v\n%s", err, table)
		}
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(back)
	t.Logf("a Service created after the API server returned was served %s after its return", took.Round(100*time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("converged %s after the API server returned, want within 5 s", took.Round(100*time.Millisecond))
	}
	waitControllersResumed(t)
}

// waitControllersResumed waits until kube-controller-manager acts again
// on new objects: each of its informers backs off on its own while the API
// server is away and can take tens of seconds to resume, and later tests
// need it (a new namespace's default ServiceAccount; a new pod in a
// Service's EndpointSlice).
func waitControllersResumed(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	ns := newNamespace(t)
	eventually(t, 3*time.Minute, "default ServiceAccount of a new namespace", func() error {
		_, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	pod := createReady(t, pinnedPod(ns, "resumed", "weft-node-2"))["resumed"]
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "resumed", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "resumed"}, Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEndpoint(t, ns, "resumed", pod.Status.PodIP, 3*time.Minute)
	t.Logf("kube-controller-manager acted on new objects again %s after the check began", time.Since(start).Round(time.Second))
}

// waitEndpoint waits until a Service's EndpointSlices hold ip.
func waitEndpoint(t *testing.T, ns, service, ip string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, service+" EndpointSlice holds "+ip, func() error {
		slices, err := client.DiscoveryV1().EndpointSlices(ns).List(context.Background(),
			metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
		if err != nil {
			return err
		}
		for _, sl := range slices.Items {
			for _, ep := range sl.Endpoints {
				if len(ep.Addresses) > 0 && ep.Addresses[0] == ip {
					return nil
				}
			}
		}
		return fmt.Errorf("not yet (%d slices)", len(slices.Items))
	})
}
