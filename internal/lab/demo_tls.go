package lab

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// demoTLS gives each host a self-signed certificate in a Secret of the
// demo namespace and the Ingress a TLS entry per host; it returns the
// certificates (PEM), which the checks trust.
func demoTLS(ctx context.Context, client kubernetes.Interface, ing *networkingv1.Ingress, hosts ...string) ([]byte, error) {
	var bundle []byte
	for _, host := range hosts {
		certPEM, keyPEM, err := selfSigned(host)
		if err != nil {
			return nil, err
		}
		name := strings.SplitN(host, ".", 2)[0] + "-tls"
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM}}
		if _, err := client.CoreV1().Secrets(DemoNamespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		ing.Spec.TLS = append(ing.Spec.TLS, networkingv1.IngressTLS{Hosts: []string{host}, SecretName: name})
		bundle = append(bundle, certPEM...)
	}
	return bundle, nil
}

func selfSigned(host string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: host},
		DNSNames: []string{host}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// tlsChecks asks from the outside namespace, over HTTPS to addr
// ("ip:port"), for each host by SNI: a host of the Ingress must present
// its own certificate (curl verifies it against trusted, the demo's
// certificates), an unknown one the default certificate.
func (l *Lab) tlsChecks(ctx context.Context, addr string, trusted []byte) ([]Check, error) {
	f, err := os.CreateTemp("", "weft-demo-certs-*.pem")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(trusted); err != nil {
		f.Close()
		return nil, err
	}
	f.Close()
	ip, port, _ := strings.Cut(addr, ":")
	ask := func(host string, verify bool) string {
		args := []string{"curl", "-sS", "-v", "-m", "5", "--resolve", host + ":" + port + ":" + ip}
		if verify {
			args = append(args, "--cacert", f.Name())
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
			return subject + ", error: " + lastLine(errb.String())
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
	return checks, nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
