package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/internal/manifests"
)

// The cluster DNS, from the manifests: a kube-system Deployment named and
// labelled like the kube-dns/CoreDNS add-on (k8s-app=kube-dns, Service
// kube-dns), since tools and upstream tests look for those names.
const (
	DNSName        = manifests.DNSName
	DNSServiceName = "kube-dns"
	NodeLocalDNS   = "169.254.20.10"
	DNSReplicas    = 2
	OutsideDNS     = "203.0.113.10:53" // the outside namespace's test DNS server
)

// waitDNS waits until the cluster DNS's pods are Ready (timeout 0: does
// not wait).
func (l *Lab) waitDNS(ctx context.Context, client kubernetes.Interface, timeout time.Duration) error {
	if timeout == 0 {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		d, err := client.AppsV1().Deployments("kube-system").Get(ctx, DNSName, metav1.GetOptions{})
		if err == nil && d.Status.ReadyReplicas >= DNSReplicas {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("%d of %d pods Ready", d.Status.ReadyReplicas, DNSReplicas)
			}
			return fmt.Errorf("cluster DNS not ready after %s: %w (logs: %s)", timeout, err, filepath.Join(l.dir, "logs"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// OutsideRecords is the file of more records the outside namespace's DNS
// server answers (lines of "name ttl address..."), read at every query:
// tests write it to change an answer.
func (l *Lab) OutsideRecords() string { return filepath.Join(l.dir, "outside-records") }
