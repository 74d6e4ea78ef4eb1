//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
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

// Long-lived traffic through weft ingress: a WebSocket echo, gRPC unary
// and server-streaming calls over h2c and over TLS to an h2c backend, and
// then 50 Ingress changes (adds, deletes, path edits, the backend scaled
// up and down) under steady HTTP load with one WebSocket held open: no
// request may fail and the WebSocket must keep echoing throughout.
func TestIngressStreamsAndChangesUnderLoad(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	deployWeb(t, ns, 2)
	createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)},
			{Name: "grpc", Port: 8082, TargetPort: intstr.FromInt32(8082), AppProtocol: ptr.To("kubernetes.io/h2c")}}}})
	createReady(t, pinnedPod(ns, "client", "weft-node-3"))
	ingress := func(name, host, path string, port networkingv1.ServiceBackendPort) *networkingv1.Ingress {
		prefix := networkingv1.PathTypePrefix
		return &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: networkingv1.IngressSpec{
			IngressClassName: ptr.To("weft"),
			Rules: []networkingv1.IngressRule{{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{Path: path, PathType: &prefix, Backend: networkingv1.IngressBackend{
					Service: &networkingv1.IngressServiceBackend{Name: "web", Port: port}}}}}}}}}}
	}
	ings := client.NetworkingV1().Ingresses(ns)
	for _, ing := range []*networkingv1.Ingress{
		ingress("ws", "ws.example.com", "/", networkingv1.ServiceBackendPort{Name: "http"}),
		ingress("grpc", "grpc.example.com", "/", networkingv1.ServiceBackendPort{Name: "grpc"}),
		ingress("churn", "churn.example.com", "/p0", networkingv1.ServiceBackendPort{Number: 80}),
	} {
		if _, err := ings.Create(ctx, ing, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	lb := ingressAddress(t)
	weft := func(limit time.Duration, args ...string) (string, error) {
		return execInFor(t, limit, ns+"/client", "", append([]string{weftBin(), "testserver"}, args...)...)
	}
	eventually(t, 30*time.Second, "WebSocket echo through the ingress", func() error {
		_, err := weft(10*time.Second, "ws", "ws://"+lb+"/ws", "--host", "ws.example.com", "--for", "500ms", "--every", "50ms")
		return err
	})
	for _, c := range []struct{ what, addr, tls string }{{"h2c", lb + ":80", "--tls=false"}, {"TLS", lb + ":443", "--tls=true"}} {
		out, err := weft(20*time.Second, "grpc", c.addr, "--authority", "grpc.example.com", c.tls, "--messages", "4")
		var r testserver.GRPCResult
		if err == nil {
			err = json.Unmarshal([]byte(out), &r)
		}
		if err != nil || r.Unary != "SERVING" || r.Streamed != 4 {
			t.Errorf("gRPC over %s: %q %v, want SERVING and 4 streamed messages", c.what, out, err)
		}
	}

	// Steady load and one open WebSocket while 50 changes land.
	const hold = 40 * time.Second
	var wg sync.WaitGroup
	var loadOut, wsOut string
	var loadErr, wsErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		loadOut, loadErr = weft(hold+20*time.Second, "load", "http://"+lb+"/hostname", "--host", "ws.example.com", "--workers", "4", "--for", hold.String())
	}()
	go func() {
		defer wg.Done()
		wsOut, wsErr = weft(hold+20*time.Second, "ws", "ws://"+lb+"/ws", "--host", "ws.example.com", "--for", hold.String(), "--every", "100ms")
	}()
	time.Sleep(2 * time.Second)
	changes := ingressChanges(t, ns, ingress)
	wg.Wait()
	t.Logf("%d changes; load: %s; WebSocket: %s", changes, loadOut, wsOut)
	if changes != 50 {
		t.Errorf("%d changes made, want 50", changes)
	}
	var lr testserver.LoadResult
	if loadErr != nil || json.Unmarshal([]byte(loadOut), &lr) != nil || lr.Requests < 100 || lr.Failed != 0 {
		t.Errorf("load during the changes: %q %v: want no failed request", loadOut, loadErr)
	}
	if wsErr != nil {
		t.Errorf("the WebSocket held during the changes: %q %v", wsOut, wsErr)
	}
	// The last path edit (change 47) is what the churn Ingress serves now:
	// /p47 reaches the backend (whose own 404 says it has no such page),
	// the previous path /p42 is no route of the ingress any more.
	eventually(t, 10*time.Second, "the last path edit served", func() error {
		for path, want := range map[string]string{"/p47": "404 page not found", "/p42": "no route"} {
			out, err := execIn(t, ns+"/client", "", "curl", "-sS", "-m", "3", "-H", "Host: churn.example.com", "http://"+lb+path)
			if err != nil || out != want {
				return fmt.Errorf("%s: %q %v, want %q", path, out, err, want)
			}
		}
		return nil
	})
}

// ingressChanges makes 50 changes, one every 300 ms: Ingresses added and
// deleted, the churn Ingress's path edited, the web Deployment scaled
// between 2 and 3 replicas. It returns how many it made.
func ingressChanges(t *testing.T, ns string, ingress func(name, host, path string, port networkingv1.ServiceBackendPort) *networkingv1.Ingress) int {
	ctx := context.Background()
	ings := client.NetworkingV1().Ingresses(ns)
	deploys := client.AppsV1().Deployments(ns)
	made := 0
	for i := range 50 {
		var err error
		switch i % 5 {
		case 0, 1:
			name := fmt.Sprintf("extra-%d", i)
			_, err = ings.Create(ctx, ingress(name, name+".example.com", "/", networkingv1.ServiceBackendPort{Number: 80}), metav1.CreateOptions{})
		case 2:
			patch := fmt.Sprintf(`[{"op":"replace","path":"/spec/rules/0/http/paths/0/path","value":"/p%d"}]`, i)
			_, err = ings.Patch(ctx, "churn", types.JSONPatchType, []byte(patch), metav1.PatchOptions{})
		case 3:
			err = ings.Delete(ctx, fmt.Sprintf("extra-%d", i-3), metav1.DeleteOptions{})
		case 4:
			replicas := 3 - (i/5)%2 // 3, 2, 3, 2, ...
			patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas)
			_, err = deploys.Patch(ctx, "web", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		}
		if err != nil {
			t.Errorf("change %d: %v", i, err)
			continue
		}
		made++
		time.Sleep(300 * time.Millisecond)
	}
	return made
}
