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
	deployWeb(t, ns, 1)
	createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}})
	createReady(t, pinnedPod(ns, "client", "weft-node-3"))
	prefix := networkingv1.PathTypePrefix
	ingress := func(name string, ann map[string]string) *networkingv1.Ingress {
		return &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann}, Spec: networkingv1.IngressSpec{
			IngressClassName: ptr.To("weft"),
			Rules: []networkingv1.IngressRule{{Host: name + ".example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: &prefix, Backend: networkingv1.IngressBackend{
					Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}}}}}}}}}}
	}
	for _, ing := range []*networkingv1.Ingress{
		ingress("moved", map[string]string{nginx.Prefix + "permanent-redirect": "https://new.example.com/"}),
		ingress("secure", map[string]string{nginx.Prefix + "force-ssl-redirect": "true"}),
		ingress("closed", map[string]string{nginx.Prefix + "whitelist-source-range": "192.0.2.0/24"}),
		ingress("prefixed", map[string]string{nginx.Prefix + "x-forwarded-prefix": "/api"}),
		ingress("snippet", map[string]string{nginx.Prefix + "configuration-snippet": "return 200 'owned';"}),
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
	eventually(t, 30*time.Second, "the snippet Ingress routed (its snippet ignored)", func() error {
		out, err := body("snippet.example.com", "/hostname")
		if err != nil || !strings.HasPrefix(out, "web-") {
			return fmt.Errorf("%q %v", out, err)
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
