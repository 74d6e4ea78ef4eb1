//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"weft.dev/weft/internal/ingress/nginx"
)

// ingress-nginx annotations through weft ingress: a redirect, the HTTPS
// redirect, a source range that shuts the client out, X-Forwarded-Prefix,
// and a snippet that is reported as an Event while its routes (and the
// others) keep serving.
func TestIngressNginxAnnotations(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	deployWeb(t, ns, 2)
	createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}})
	createReady(t, pinnedPod(ns, "client", "weft-node-3"), pinnedPod(ns, "beta", "weft-node-2"))
	createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "beta", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "beta"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}})
	prefix := networkingv1.PathTypePrefix
	ingress := func(name string, ann map[string]string) *networkingv1.Ingress {
		return &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann}, Spec: networkingv1.IngressSpec{
			IngressClassName: ptr.To("weft"),
			Rules: []networkingv1.IngressRule{{Host: name + ".example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: &prefix, Backend: networkingv1.IngressBackend{
					Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}}}}}}}}}}
	}
	// A canary Ingress repeating the canary host's route, for beta, by header.
	canary := ingress("canary", map[string]string{nginx.Prefix + "canary": "true", nginx.Prefix + "canary-by-header": "X-Canary"})
	canary.Name = "canary-beta"
	canary.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Name = "beta"
	if _, err := client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "hdrs", Namespace: ns},
		Data: map[string]string{"X-Team": "payments", "Content-Length": "0"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rewriting := ingress("rewrite", map[string]string{nginx.Prefix + "rewrite-target": "/$2"})
	rewriting.Spec.Rules[0].HTTP.Paths[0].Path = "/app(/|$)(.*)"
	for _, ing := range []*networkingv1.Ingress{
		ingress("moved", map[string]string{nginx.Prefix + "permanent-redirect": "https://new.example.com/"}),
		ingress("secure", map[string]string{nginx.Prefix + "force-ssl-redirect": "true"}),
		ingress("closed", map[string]string{nginx.Prefix + "whitelist-source-range": "192.0.2.0/24"}),
		ingress("prefixed", map[string]string{nginx.Prefix + "x-forwarded-prefix": "/api"}),
		ingress("snippet", map[string]string{nginx.Prefix + "configuration-snippet": "return 200 'owned';"}),
		ingress("cors", map[string]string{nginx.Prefix + "enable-cors": "true", nginx.Prefix + "cors-allow-origin": "https://app.example.org"}),
		ingress("sticky", map[string]string{nginx.Prefix + "affinity": "cookie", nginx.Prefix + "session-cookie-name": "weft-e2e"}),
		ingress("impatient", map[string]string{nginx.Prefix + "proxy-read-timeout": "1"}),
		rewriting,
		ingress("canary", nil),
		canary,
		ingress("headers", map[string]string{nginx.Prefix + "custom-headers": "hdrs"}),
	} {
		if _, err := client.NetworkingV1().Ingresses(ns).Create(ctx, ing, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	lb := ingressAddress(t)
	curl := func(host, path string) (string, error) {
		return execIn(t, ns+"/client", "", "curl", "-sS", "-m", "3", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
			"-H", "Host: "+host, "http://"+lb+path)
	}
	body := func(host, path string) (string, error) {
		return execIn(t, ns+"/client", "", "curl", "-sS", "-m", "3", "-H", "Host: "+host, "http://"+lb+path)
	}
	eventually(t, 30*time.Second, "the snippet, cors, sticky and impatient Ingresses routed (the snippet ignored)", func() error {
		for _, host := range []string{"snippet", "cors", "sticky", "impatient", "canary"} {
			out, err := body(host+".example.com", "/hostname")
			if err != nil || !strings.HasPrefix(out, "web-") {
				return fmt.Errorf("%s: %q %v", host, out, err)
			}
		}
		return nil
	})
	checks := []struct{ what, host, path, want string }{
		{"permanent-redirect", "moved.example.com", "/x", "301 https://new.example.com/"},
		{"force-ssl-redirect", "secure.example.com", "/x?y=1", "308 https://secure.example.com/x?y=1"},
		{"whitelist-source-range without the client", "closed.example.com", "/hostname", "403"},
	}
	for _, c := range checks {
		if out, err := curl(c.host, c.path); err != nil || out != c.want {
			t.Errorf("%s: %q %v, want %q", c.what, out, err, c.want)
		}
	}
	if out, err := body("prefixed.example.com", "/header/X-Forwarded-Prefix"); err != nil || out != "/api" {
		t.Errorf("x-forwarded-prefix: %q %v, want /api", out, err)
	}
	// rewrite-target: /App/hostname reaches the pod as /hostname.
	if out, err := body("rewrite.example.com", "/App/hostname"); err != nil || !strings.HasPrefix(out, "web-") {
		t.Errorf("rewrite-target: %q %v, want a web pod's name", out, err)
	}
	// canary-by-header: X-Canary always goes to beta, never and none to web.
	viaCanary := func(hdr string) (string, error) {
		return execIn(t, ns+"/client", "", "curl", "-sS", "-m", "3", "-H", "Host: canary.example.com", "-H", "X-Canary: "+hdr, "http://"+lb+"/hostname")
	}
	eventually(t, 20*time.Second, "X-Canary: always served by beta", func() error {
		if out, err := viaCanary("always"); err != nil || out != "beta" {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	})
	for _, hdr := range []string{"never", ""} {
		if out, err := viaCanary(hdr); err != nil || !strings.HasPrefix(out, "web-") {
			t.Errorf("canary, X-Canary %q: %q %v, want a web pod", hdr, out, err)
		}
	}
	// custom-headers: the ConfigMap's X-Team on the response; its
	// Content-Length refused (the body still arrives whole).
	eventually(t, 20*time.Second, "X-Team from the ConfigMap", func() error {
		out, err := execIn(t, ns+"/client", "", "curl", "-sS", "-m", "3", "-H", "Host: headers.example.com", "-w", " %header{x-team}", "http://"+lb+"/hostname")
		if err != nil || !strings.HasPrefix(out, "web-") || !strings.HasSuffix(out, " payments") {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	})
	// CORS: the preflight answered by the proxy for the allowed origin.
	if out, err := execIn(t, ns+"/client", "", "curl", "-sS", "-m", "3", "-o", "/dev/null", "-X", "OPTIONS",
		"-H", "Host: cors.example.com", "-H", "Origin: https://app.example.org", "-H", "Access-Control-Request-Method: PUT",
		"-w", "%{http_code} %header{access-control-allow-origin} %header{access-control-allow-methods}", "http://"+lb+"/x"); err != nil ||
		out != "204 https://app.example.org GET, PUT, POST, DELETE, PATCH, OPTIONS" {
		t.Errorf("cors preflight: %q %v", out, err)
	}
	// Affinity: with the cookie the first answer set, every request goes
	// to the same one of the two web pods.
	sticky, err := execIn(t, ns+"/client", "", "sh", "-c", "rm -f /tmp/jar; for i in 1 2 3 4 5 6; do curl -sS -m 3 -b /tmp/jar -c /tmp/jar -H 'Host: sticky.example.com' http://"+lb+"/hostname; echo; done")
	if names := strings.Fields(sticky); err != nil || len(names) != 6 || strings.Count(sticky, names[0]) != 6 {
		t.Errorf("affinity cookie: %q %v, want one pod six times", sticky, err)
	}
	// proxy-read-timeout 1: a backend answering after 2 s gets 504, one
	// after 0.2 s is served.
	for path, want := range map[string]string{"/delay/2000": "504", "/delay/200": "200"} {
		if out, err := curl("impatient.example.com", path); err != nil || out != want {
			t.Errorf("proxy-read-timeout %s: %q %v, want %q", path, out, err, want)
		}
	}
	eventually(t, 20*time.Second, "a Warning Event on the snippet Ingress", func() error {
		evs, err := client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=snippet"})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, "snippets") {
				return nil
			}
		}
		return fmt.Errorf("no warning about the snippet among %d events", len(evs.Items))
	})
}
