//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// weft ingress, installed by the manifests behind a LoadBalancer Service:
// host and path routing, 404 for an unknown host, TLS by SNI with the
// default certificate for other names, the client's address in
// X-Forwarded-For, status.loadBalancer written, an invalid Ingress
// reported as an Event while the others keep working, and the same routes
// from the outside namespace through a node's NodePort.
func TestIngressRoutesHostsPathsAndTLS(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	deployWeb(t, ns, 2)
	createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}})
	cli := createReady(t, pinnedPod(ns, "client", "weft-node-3"))["client"]
	caFile, certPEM, keyPEM := issueCert(t, "a.example.com")
	if _, err := client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "a-tls", Namespace: ns}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	prefix, exact := networkingv1.PathTypePrefix, networkingv1.PathTypeExact
	rule := func(host, path string, kind *networkingv1.PathType, port networkingv1.ServiceBackendPort) networkingv1.IngressRule {
		return networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
			Paths: []networkingv1.HTTPIngressPath{{Path: path, PathType: kind, Backend: networkingv1.IngressBackend{
				Service: &networkingv1.IngressServiceBackend{Name: "web", Port: port}}}}}}}
	}
	good := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "good", Namespace: ns}, Spec: networkingv1.IngressSpec{
		IngressClassName: ptr.To("weft"),
		TLS:              []networkingv1.IngressTLS{{Hosts: []string{"a.example.com"}, SecretName: "a-tls"}},
		Rules: []networkingv1.IngressRule{rule("a.example.com", "/", &prefix, networkingv1.ServiceBackendPort{Number: 80}),
			rule("b.example.com", "/hostname", &exact, networkingv1.ServiceBackendPort{Name: "http"})}}}
	bad := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: ns}, Spec: networkingv1.IngressSpec{
		IngressClassName: ptr.To("weft"),
		Rules:            []networkingv1.IngressRule{rule("c.example.com", "/", &prefix, networkingv1.ServiceBackendPort{Number: 9999})}}}
	for _, ing := range []*networkingv1.Ingress{good, bad} {
		if _, err := client.NetworkingV1().Ingresses(ns).Create(ctx, ing, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	lb := ingressAddress(t)
	curl := func(args ...string) (string, error) {
		return execIn(t, ns+"/client", "", append([]string{"curl", "-sS", "-m", "3"}, args...)...)
	}
	resolve := func(host string, port int) string { return fmt.Sprintf("%s:%d:%s", host, port, lb) }
	eventually(t, 30*time.Second, "a.example.com routed", func() error {
		out, err := curl("--resolve", resolve("a.example.com", 80), "http://a.example.com/hostname")
		if err != nil || !strings.HasPrefix(out, "web-") {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	})
	checks := []struct {
		what string
		args []string
		want string // prefix of the body, or "!" + curl's error
	}{
		{"Exact path", []string{"--resolve", resolve("b.example.com", 80), "http://b.example.com/hostname"}, "web-"},
		{"Exact path, longer request", []string{"--resolve", resolve("b.example.com", 80), "http://b.example.com/hostname/more"}, "no route"},
		{"unknown host", []string{"--resolve", resolve("z.example.com", 80), "http://z.example.com/"}, "no route"},
		{"TLS by SNI, verified against the Secret's CA", []string{"--cacert", caFile, "--resolve", resolve("a.example.com", 443), "https://a.example.com/hostname"}, "web-"},
		{"HTTP/2 over TLS", []string{"--http2", "-o", "/dev/null", "-w", "%{http_version}", "--cacert", caFile, "--resolve", resolve("a.example.com", 443), "https://a.example.com/"}, "2"},
		{"h2c with prior knowledge", []string{"--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version}", "--resolve", resolve("a.example.com", 80), "http://a.example.com/"}, "2"},
		{"another name gets the default certificate", []string{"--cacert", caFile, "--resolve", resolve("b.example.com", 443), "https://b.example.com/hostname"}, "!"},
		{"the same name without verification", []string{"-k", "--resolve", resolve("b.example.com", 443), "https://b.example.com/hostname"}, "web-"},
		{"the invalid Ingress's backend is not served", []string{"--resolve", resolve("c.example.com", 80), "http://c.example.com/"}, "no endpoints"},
	}
	// X-Forwarded-For holds the address the proxy saw, never the client's
	// own header. weft's service proxy masquerades pods reaching a
	// LoadBalancer address to their node's address (its InternalIP, or its
	// first pod-network address when the ingress pod is on the same node;
	// kube-proxy keeps a pod's source there): any of those is right here.
	cliNode := nodeByName(t, cli.Spec.NodeName)
	_, podCIDR, _ := net.ParseCIDR(cliNode.Spec.PodCIDR)
	seen := []string{cli.Status.PodIP, podCIDR.IP.String()}
	for _, a := range cliNode.Status.Addresses {
		seen = append(seen, a.Address)
	}
	if xff, err := curl("--resolve", resolve("a.example.com", 80), "-H", "X-Forwarded-For: 6.6.6.6", "http://a.example.com/header/X-Forwarded-For"); err != nil || !slices.Contains(seen, xff) {
		t.Errorf("X-Forwarded-For %q %v, want one of %v (and never the client's 6.6.6.6)", xff, err, seen)
	}
	for _, c := range checks {
		out, err := curl(c.args...)
		switch {
		case c.want == "!" && err == nil:
			t.Errorf("%s: succeeded (%q), want a certificate error", c.what, out)
		case c.want != "!" && (err != nil || !strings.HasPrefix(out, c.want)):
			t.Errorf("%s: %q %v, want %q", c.what, out, err, c.want)
		}
	}
	eventually(t, 20*time.Second, "status.loadBalancer written", func() error {
		got, err := client.NetworkingV1().Ingresses(ns).Get(ctx, "good", metav1.GetOptions{})
		if err != nil || len(got.Status.LoadBalancer.Ingress) == 0 || got.Status.LoadBalancer.Ingress[0].IP != lb {
			return fmt.Errorf("status %+v %v", got.Status.LoadBalancer, err)
		}
		return nil
	})
	eventually(t, 20*time.Second, "an Event on the invalid Ingress", func() error {
		evs, err := client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=bad"})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, "no port 9999") {
				return nil
			}
		}
		return fmt.Errorf("no warning about port 9999 among %d events", len(evs.Items))
	})
	// From outside the cluster: the ingress Service's NodePort on a node.
	svc, err := client.CoreV1().Services("kube-system").Get(ctx, "weft-ingress", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node := nodeByName(t, "weft-node-1").Status.Addresses[0].Address
	url := fmt.Sprintf("http://%s:%d/hostname", node, svc.Spec.Ports[0].NodePort)
	out, err := exec.Command("ip", "netns", "exec", "weft-outside", "curl", "-sS", "-m", "3", "-H", "Host: a.example.com", url).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "web-") {
		t.Errorf("from the outside namespace via %s: %q %v", url, out, err)
	}
}

// ingressAddress waits for the ingress Service's LoadBalancer address.
func ingressAddress(t *testing.T) string {
	var ip string
	eventually(t, 30*time.Second, "ingress load-balancer address", func() error {
		svc, err := client.CoreV1().Services("kube-system").Get(context.Background(), "weft-ingress", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(svc.Status.LoadBalancer.Ingress) == 0 {
			return fmt.Errorf("none yet")
		}
		ip = svc.Status.LoadBalancer.Ingress[0].IP
		return nil
	})
	return ip
}

// issueCert makes a CA and a certificate for host signed by it; the CA is
// written where the client pod (which sees the machine's /tmp) reads it.
func issueCert(t *testing.T, host string) (caFile string, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weft e2e CA"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	caCert, _ := x509.ParseCertificate(caDER)
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	caFile = filepath.Join(os.TempDir(), "weft-e2e-ca-"+host+".pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(caFile) })
	return caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}
