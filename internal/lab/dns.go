package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// The cluster DNS runs as a kube-system Deployment, named and labelled like
// the kube-dns/CoreDNS add-on (k8s-app=kube-dns, Service kube-dns), since
// tools and upstream tests look for those names.
const (
	DNSName        = "weft-dns"
	DNSServiceName = "kube-dns"
	DNSImage       = "weft.dev/weft:lab" // the lab node runs bin/weft for it
	NodeLocalDNS   = "169.254.20.10"
	DNSReplicas    = 2
	OutsideDNS     = "203.0.113.10:53" // the outside namespace's test DNS server
)

// dnsObjects: the cluster DNS's Service and Deployment; its
// ServiceAccount and ClusterRole come from the manifests (applyRBAC).
func dnsObjects() (*corev1.Service, *appsv1.Deployment) {
	ns := "kube-system"
	labels := map[string]string{"k8s-app": "kube-dns"}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: DNSServiceName, Namespace: ns, Labels: labels},
		Spec: corev1.ServiceSpec{ClusterIP: ClusterDNS, Selector: labels, Ports: []corev1.ServicePort{
			{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(53)},
			{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(53)},
			{Name: "metrics", Protocol: corev1.ProtocolTCP, Port: 9153, TargetPort: intstr.FromInt32(9153)},
		}}}
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(9153)}},
			PeriodSeconds: 2, FailureThreshold: 3}
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: DNSName, Namespace: ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](DNSReplicas), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: DNSName,
					DNSPolicy:          corev1.DNSDefault, // its own lookups go to the node's resolvers
					PriorityClassName:  "system-cluster-critical",
					Tolerations: []corev1.Toleration{{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule},
						{Key: "CriticalAddonsOnly", Operator: corev1.TolerationOpExists}},
					TerminationGracePeriodSeconds: ptr.To[int64](2),
					Containers: []corev1.Container{{
						Name: "dns", Image: DNSImage,
						Args: []string{"dns", "--zone=" + ClusterDomain, "--nameserver-ip=" + ClusterDNS,
							"--upstream=" + OutsideDNS, "--listen=:53", "--http=:9153"},
						// The lab node sets no service environment variables;
						// in-cluster config needs these two.
						Env: []corev1.EnvVar{{Name: "KUBERNETES_SERVICE_HOST", Value: "10.96.0.1"}, {Name: "KUBERNETES_SERVICE_PORT", Value: "443"}},
						Ports: []corev1.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
							{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP}, {Name: "metrics", ContainerPort: 9153}},
						ReadinessProbe: probe("/ready"),
						LivenessProbe:  probe("/healthz"),
					}},
				}}}}
	return svc, dep
}

// deployDNS creates the cluster DNS and waits until its pods are Ready
// (timeout 0: does not wait).
func (l *Lab) deployDNS(ctx context.Context, client kubernetes.Interface, timeout time.Duration) error {
	svc, dep := dnsObjects()
	create := func(what string, err error) error {
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("cluster DNS %s: %w", what, err)
		}
		return nil
	}
	if err := create("service", ignoreObj(client.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{}))); err != nil {
		return err
	}
	if err := create("deployment", ignoreObj(client.AppsV1().Deployments(dep.Namespace).Create(ctx, dep, metav1.CreateOptions{}))); err != nil {
		return err
	}
	if timeout == 0 {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		d, err := client.AppsV1().Deployments(dep.Namespace).Get(ctx, dep.Name, metav1.GetOptions{})
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

func ignoreObj[T any](_ T, err error) error { return err }
