package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/internal/lab/pki"
)

// demoTLS issues each host a certificate from a CA of its own (the
// lab's pki package, files in dir), puts it in a Secret of the demo
// namespace and gives the Ingress a TLS entry per host; it returns the
// CA's certificate file, which the checks trust.
func demoTLS(ctx context.Context, client kubernetes.Interface, ing *networkingv1.Ingress, dir string, hosts ...string) (string, error) {
	d := pki.Dir(dir)
	ca, err := pki.NewCA(d)
	if err != nil {
		return "", err
	}
	for _, host := range hosts {
		name := strings.SplitN(host, ".", 2)[0] + "-tls"
		certPath, keyPath, err := ca.Issue(d, pki.Spec{Name: name, CN: host, DNS: []string{host}, Server: true})
		if err != nil {
			return "", err
		}
		cert, err := os.ReadFile(certPath)
		if err != nil {
			return "", err
		}
		key, err := os.ReadFile(keyPath)
		if err != nil {
			return "", err
		}
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key}}
		if _, err := client.CoreV1().Secrets(DemoNamespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
			return "", err
		}
		ing.Spec.TLS = append(ing.Spec.TLS, networkingv1.IngressTLS{Hosts: []string{host}, SecretName: name})
	}
	return d.Path("ca.crt"), nil
}

// tlsChecks asks from the outside namespace, over HTTPS to addr
// ("ip:port"), for each host by SNI: a host of the Ingress must present
// its own certificate (curl verifies it against caFile, the
// demo CA), an unknown one the default certificate.
func (l *Lab) tlsChecks(ctx context.Context, addr, caFile string) []Check {
	ip, port, _ := strings.Cut(addr, ":")
	ask := func(host string, verify bool) string {
		args := []string{"curl", "-sS", "-v", "-m", "5", "--resolve", host + ":" + port + ":" + ip}
		if verify {
			args = append(args, "--cacert", caFile)
		} else {
			args = append(args, "-k")
		}
		var out, errb bytes.Buffer
		err := l.Exec(ctx, ExecOptions{Target: "outside", Stdout: &out, Stderr: &errb,
			Argv: append(args, fmt.Sprintf("https://%s:%s/hostname", host, port))})
		subject := "no certificate"
		for _, line := range strings.Split(errb.String(), "\n") {
			if _, s, ok := strings.Cut(line, " subject: "); ok {
				subject = strings.TrimSpace(s)
			}
		}
		if err != nil {
			return subject + ", error: " + curlError(errb.String())
		}
		return subject + ", " + strings.TrimSpace(out.String())
	}
	var checks []Check
	for _, c := range []struct {
		host, want string
		verify     bool
	}{
		{"echo.example.com", "CN=echo.example.com, echo-", true},
		{"api.example.com", "CN=api.example.com, echo-", true},
		{"nobody.example.com", "CN=weft ingress default certificate, no route", false},
	} {
		got := ask(c.host, c.verify)
		checks = append(checks, Check{Node: "-", From: "outside → " + addr, To: "https://" + c.host + "/hostname",
			What: "TLS by SNI through weft ingress", Want: c.want + "…", Got: got, OK: strings.HasPrefix(got, c.want)})
	}
	return checks
}

// curlError is curl's own error line in its verbose output.
func curlError(s string) string {
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "curl: (") {
			return line
		}
	}
	return "curl failed"
}
