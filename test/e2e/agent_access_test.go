//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"weft.dev/weft/internal/manifests"
)

// The agent's ServiceAccount, holding a token bound to a pod on one node
// as the DaemonSet's pods do, is refused by the real API server when it
// patches another Node (the admission policy), reads a Secret or writes a
// Service (RBAC); patching its own Node is allowed, so the refusals are
// not a token that works for nothing.
func TestAgentServiceAccountIsRefused(t *testing.T) {
	ctx := context.Background()
	// The lab created the manifests' ServiceAccounts, ClusterRoles and
	// admission policy (lab.applyRBAC).
	conf := manifests.Defaults()

	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) < 2 {
		t.Fatalf("want two nodes: %v", err)
	}
	own, other := nodes.Items[0].Name, nodes.Items[1].Name
	agent := agentClient(t, conf, own)

	mark := func(c kubernetes.Interface, node string) error {
		patch := []byte(`{"metadata":{"annotations":{"e2e.weft.dev/access-probe":"1"}}}`)
		_, err := c.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
		return err
	}
	t.Cleanup(func() {
		for _, n := range []string{own, other} {
			patch := []byte(`{"metadata":{"annotations":{"e2e.weft.dev/access-probe":null}}}`)
			_, _ = client.CoreV1().Nodes().Patch(ctx, n, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
		}
	})
	// RBAC and the admission policy reach the API server's caches shortly
	// after they are created.
	eventually(t, 30*time.Second, "the agent patches its own Node and not another", func() error {
		if err := mark(agent, own); err != nil {
			return fmt.Errorf("own Node %s: %v", own, err)
		}
		err := mark(agent, other)
		if err == nil {
			return fmt.Errorf("patching Node %s, not its own, was allowed", other)
		}
		if !strings.Contains(err.Error(), "weft-agent may change only the Node its pod runs on") {
			return fmt.Errorf("patching Node %s was refused, but not by the admission policy: %v", other, err)
		}
		return nil
	})
	if _, err := agent.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing Secrets: want Forbidden, got %v", err)
	}
	if _, err := agent.CoreV1().Secrets("kube-system").Get(ctx, "any", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("reading a Secret: want Forbidden, got %v", err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "weft-e2e-agent-probe"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := agent.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("creating a Service: want Forbidden, got %v", err)
		_ = client.CoreV1().Services("default").Delete(ctx, svc.Name, metav1.DeleteOptions{})
	}
	if _, err := agent.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("reading a Service, which the agent needs: %v", err)
	}
}

// agentClient is a client with a token of the agent's ServiceAccount bound
// to a pod on node, as the kubelet gives the DaemonSet's pod.
func agentClient(t *testing.T, conf manifests.Config, node string) kubernetes.Interface {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: conf.Namespace, Name: "weft-e2e-agent-token"},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: manifests.AgentName,
			Containers: []corev1.Container{{Name: "server", Image: "weft/testserver"}}}}
	pod, err := client.CoreV1().Pods(conf.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = client.CoreV1().Pods(conf.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: new(int64(600)),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}}}
	tok, err := client.CoreV1().ServiceAccounts(conf.Namespace).CreateToken(ctx, manifests.AgentName, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := clientcmd.BuildConfigFromFlags("", theLab.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(admin)
	cfg.BearerToken = tok.Status.Token
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
