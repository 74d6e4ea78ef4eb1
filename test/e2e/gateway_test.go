//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
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
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"weft.dev/weft/internal/ingress/gateway"
	"weft.dev/weft/internal/ingress/nginx"
	"weft.dev/weft/internal/ingress/togateway"
	"weft.dev/weft/internal/kubeclient"
	"weft.dev/weft/internal/testserver"
)

func gatewayAPI(t *testing.T) gwclient.Interface {
	t.Helper()
	c, err := kubeclient.NewGatewayAPI(theLab.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// gatewayClass creates a GatewayClass of weft's for this test only.
func gatewayClass(t *testing.T, gw gwclient.Interface, name string) {
	t.Helper()
	ctx := context.Background()
	if _, err := gw.GatewayV1().GatewayClasses().Create(ctx, &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: gwv1.GatewayClassSpec{ControllerName: gateway.ControllerName}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.GatewayV1().GatewayClasses().Delete(ctx, name, metav1.DeleteOptions{}) })
}

// gatewayAddress waits for a Gateway to be Programmed with an address.
func gatewayAddress(t *testing.T, gw gwclient.Interface, ns, name string) string {
	t.Helper()
	var addr string
	eventually(t, 60*time.Second, "Gateway "+name+" programmed with an address", func() error {
		g, err := gw.GatewayV1().Gateways(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range g.Status.Conditions {
			if c.Type == "Programmed" && c.Status == metav1.ConditionTrue && len(g.Status.Addresses) > 0 {
				addr = g.Status.Addresses[0].Value
				return nil
			}
		}
		return fmt.Errorf("status %+v", g.Status.Conditions)
	})
	return addr
}

// applyGateway creates what migrate --to-gateway wrote.
func applyGateway(t *testing.T, gw gwclient.Interface, res *togateway.Result) {
	t.Helper()
	ctx := context.Background()
	if _, err := gw.GatewayV1().Gateways(res.Gateway.Namespace).Create(ctx, res.Gateway, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, g := range res.Grants {
		if _, err := gw.GatewayV1().ReferenceGrants(g.Namespace).Create(ctx, g, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range res.Routes {
		if _, err := gw.GatewayV1().HTTPRoutes(r.Namespace).Create(ctx, r, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGatewayMigrationAnswersAsTheIngresses: the Gateway API objects
// `weft ingress migrate --to-gateway` writes for Ingresses with honoured
// ingress-nginx annotations answer each request as the Ingresses do:
// status, the headers that matter, the backend.
func TestGatewayMigrationAnswersAsTheIngresses(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	gw := gatewayAPI(t)
	gatewayClass(t, gw, ns)
	deployWeb(t, ns, 2)
	createReady(t, pinnedPod(ns, "client", "weft-node-3"), pinnedPod(ns, "beta", "weft-node-2"))
	for _, name := range []string{"web", "beta"} {
		createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}})
	}
	ingress := func(name string, ann map[string]string) *networkingv1.Ingress {
		prefix := networkingv1.PathTypePrefix
		return &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann}, Spec: networkingv1.IngressSpec{
			IngressClassName: ptr.To("weft"),
			Rules: []networkingv1.IngressRule{{Host: name + ".example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: &prefix, Backend: networkingv1.IngressBackend{
					Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}}}}}}}}}}
	}
	rewriting := ingress("rewrite", map[string]string{nginx.Prefix + "rewrite-target": "/$2"})
	rewriting.Spec.Rules[0].HTTP.Paths[0].Path = "/app(/|$)(.*)"
	canary := ingress("canary", map[string]string{nginx.Prefix + "canary": "true", nginx.Prefix + "canary-by-header": "X-Canary",
		nginx.Prefix + "canary-by-header-value": "beta"})
	canary.Name = "canary-beta"
	canary.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Name = "beta"
	ings := []*networkingv1.Ingress{
		ingress("plain", nil),
		ingress("moved", map[string]string{nginx.Prefix + "permanent-redirect": "https://new.example.com/"}),
		ingress("found", map[string]string{nginx.Prefix + "temporal-redirect": "https://other.example.com/there"}),
		ingress("approot", map[string]string{nginx.Prefix + "app-root": "/start"}),
		ingress("prefixed", map[string]string{nginx.Prefix + "x-forwarded-prefix": "/api"}),
		ingress("vhost", map[string]string{nginx.Prefix + "upstream-vhost": "internal.example.com"}),
		ingress("cors", map[string]string{nginx.Prefix + "enable-cors": "true", nginx.Prefix + "cors-allow-origin": "https://app.example.org"}),
		rewriting, ingress("canary", nil), canary,
	}
	for _, ing := range ings {
		if _, err := client.NetworkingV1().Ingresses(ns).Create(ctx, ing, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	res := togateway.Convert(ings, togateway.Options{Namespace: ns, Name: "migrated", Class: ns})
	for _, n := range res.NotExpressed {
		// The one difference migrate lists for these annotations, and the
		// cases below do not ask about.
		if !strings.Contains(n, "keeps the request's query string") {
			t.Errorf("an honoured annotation not expressed: %s", n)
		}
	}
	applyGateway(t, gw, res)
	ingressLB, gatewayLB := ingressAddress(t), gatewayAddress(t, gw, ns, "migrated")

	// One line per answer: status, Location, the CORS header, and the body
	// with a pod's name cut to its Deployment's (web-…: any web pod).
	ask := func(lb, host, path string, hdr ...string) (string, error) {
		args := []string{"sh", "-c", `out=$(curl -sS -m 3 "$@" -w '\n%{http_code} %{redirect_url} %header{access-control-allow-origin}') && printf '%s' "$out"`, "sh",
			"-H", "Host: " + host}
		for _, h := range hdr {
			args = append(args, "-H", h)
		}
		out, err := execIn(t, ns+"/client", "", append(args, "http://"+lb+path)...)
		if err != nil {
			return out, err
		}
		body, meta, _ := strings.Cut(out, "\n")
		if i := strings.Index(body, "-"); strings.HasPrefix(body, "web-") && i > 0 {
			body = body[:i]
		}
		return strings.TrimSpace(meta) + " | " + body, nil
	}
	cases := []struct {
		host, path string
		hdr        []string
	}{
		{"plain.example.com", "/hostname", nil},
		{"plain.example.com", "/header/X-Forwarded-Host", nil},
		{"nowhere.example.com", "/hostname", nil},
		{"moved.example.com", "/x", nil},
		{"found.example.com", "/x", nil},
		{"approot.example.com", "/", nil},
		{"approot.example.com", "/hostname", nil},
		{"prefixed.example.com", "/header/X-Forwarded-Prefix", nil},
		{"vhost.example.com", "/header/Host", nil},
		{"cors.example.com", "/hostname", []string{"Origin: https://app.example.org"}},
		{"cors.example.com", "/hostname", []string{"Origin: https://evil.example.org"}},
		{"rewrite.example.com", "/app/hostname", nil},
		{"rewrite.example.com", "/hostname", nil},
		{"canary.example.com", "/hostname", []string{"X-Canary: beta"}},
		{"canary.example.com", "/hostname", []string{"X-Canary: other"}},
	}
	eventually(t, 60*time.Second, "both answer the first case", func() error {
		for _, lb := range []string{ingressLB, gatewayLB} {
			if out, err := ask(lb, "plain.example.com", "/hostname"); err != nil || !strings.HasSuffix(out, "| web") {
				return fmt.Errorf("%s: %q %v", lb, out, err)
			}
		}
		return nil
	})
	for _, c := range cases {
		want, err := ask(ingressLB, c.host, c.path, c.hdr...)
		if err != nil {
			t.Errorf("%s%s via the Ingress: %q %v", c.host, c.path, want, err)
			continue
		}
		got, err := ask(gatewayLB, c.host, c.path, c.hdr...)
		if err != nil || got != want {
			t.Errorf("%s%s %v: Gateway %q %v, Ingress %q", c.host, c.path, c.hdr, got, err, want)
		}
	}
}

// TestGatewayRouteChangesUnderLoad: 50 HTTPRoute changes (routes added
// and deleted, one route's path edited, the backend scaled) under steady
// load fail no request, and the last edit is what is served.
func TestGatewayRouteChangesUnderLoad(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	gw := gatewayAPI(t)
	gatewayClass(t, gw, ns)
	deployWeb(t, ns, 2)
	createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}})
	createReady(t, pinnedPod(ns, "client", "weft-node-3"))
	if _, err := gw.GatewayV1().Gateways(ns).Create(ctx, &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"},
		Spec: gwv1.GatewaySpec{GatewayClassName: gwv1.ObjectName(ns), Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	routes := gw.GatewayV1().HTTPRoutes(ns)
	httpRoute := func(name, host, path string) *gwv1.HTTPRoute {
		return &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "gw"}}},
			Hostnames:       []gwv1.Hostname{gwv1.Hostname(host)},
			Rules: []gwv1.HTTPRouteRule{{Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr.To(gwv1.PathMatchPathPrefix), Value: ptr.To(path)}}},
				BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "web", Port: ptr.To(gwv1.PortNumber(80))}}}}}}}}
	}
	for _, r := range []*gwv1.HTTPRoute{httpRoute("steady", "steady.example.com", "/"), httpRoute("churn", "churn.example.com", "/p0")} {
		if _, err := routes.Create(ctx, r, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	lb := gatewayAddress(t, gw, ns, "gw")
	weft := func(limit time.Duration, args ...string) (string, error) {
		return execInFor(t, limit, ns+"/client", "", append([]string{weftBin(), "testserver"}, args...)...)
	}
	eventually(t, 30*time.Second, "the steady route served", func() error {
		out, err := execIn(t, ns+"/client", "", "curl", "-sS", "-m", "3", "-H", "Host: steady.example.com", "http://"+lb+"/hostname")
		if err != nil || !strings.HasPrefix(out, "web-") {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	})
	const hold = 40 * time.Second
	var wg sync.WaitGroup
	var loadOut string
	var loadErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		loadOut, loadErr = weft(hold+20*time.Second, "load", "http://"+lb+"/hostname", "--host", "steady.example.com", "--workers", "4", "--for", hold.String())
	}()
	time.Sleep(2 * time.Second)
	made := 0
	for i := range 50 {
		var err error
		switch i % 5 {
		case 0, 1:
			name := fmt.Sprintf("extra-%d", i)
			_, err = routes.Create(ctx, httpRoute(name, name+".example.com", "/"), metav1.CreateOptions{})
		case 2:
			err = routes.Delete(ctx, fmt.Sprintf("extra-%d", i-2), metav1.DeleteOptions{})
		case 3:
			var r *gwv1.HTTPRoute
			if r, err = routes.Get(ctx, "churn", metav1.GetOptions{}); err == nil {
				r.Spec.Rules[0].Matches[0].Path.Value = ptr.To(fmt.Sprintf("/p%d", i))
				_, err = routes.Update(ctx, r, metav1.UpdateOptions{})
			}
		case 4:
			patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, 3-(i/5)%2) // 3, 2, 3, ...
			_, err = client.AppsV1().Deployments(ns).Patch(ctx, "web", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		}
		if err != nil {
			t.Errorf("change %d: %v", i, err)
		} else {
			made++
		}
		time.Sleep(300 * time.Millisecond)
	}
	wg.Wait()
	t.Logf("%d changes; load: %s", made, loadOut)
	var lr testserver.LoadResult
	if loadErr != nil || json.Unmarshal([]byte(loadOut), &lr) != nil || lr.Requests < 100 || lr.Failed != 0 {
		t.Errorf("load during the changes: %q %v: want no failed request", loadOut, loadErr)
	}
	eventually(t, 10*time.Second, "the last path edit served", func() error {
		for path, want := range map[string]string{"/p48": "404 page not found", "/p43": "no route"} {
			out, err := execIn(t, ns+"/client", "", "curl", "-sS", "-m", "3", "-H", "Host: churn.example.com", "http://"+lb+path)
			if err != nil || out != want {
				return fmt.Errorf("%s: %q %v, want %q", path, out, err, want)
			}
		}
		return nil
	})
}
