//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weft.dev/weft/internal/ingress/gateway"
	"weft.dev/weft/internal/manifests"
)

// impersonating is the lab's admin acting as another user (no
// system:masters), as the API server's RBAC and admission see it.
func impersonating(t *testing.T, user string, groups ...string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", theLab.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append(groups, "system:authenticated")}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A Gateway's Service is made in its namespace with the Gateway's
// infrastructure labels and annotations, and EndpointSlices naming the
// proxy's pods; a tenant who may edit Services there cannot repoint it,
// relabel it or forge one, and weft ingress may write no other Service.
func TestGatewayServiceInItsNamespaceIsGuarded(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	gw := gatewayAPI(t)
	gatewayClass(t, gw, ns)
	g := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: ns}, Spec: gwv1.GatewaySpec{GatewayClassName: gwv1.ObjectName(ns),
		Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}},
		Infrastructure: &gwv1.GatewayInfrastructure{Labels: map[gwv1.LabelKey]gwv1.LabelValue{"team": "edge"},
			Annotations: map[gwv1.AnnotationKey]gwv1.AnnotationValue{"example.com/owner": "edge-team"}}}}
	if _, err := gw.GatewayV1().Gateways(ns).Create(ctx, g, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	gatewayAddress(t, gw, ns, g.Name)
	svcName := gateway.ServiceName(ns, g.Name)
	var svc *corev1.Service
	eventually(t, 30*time.Second, "the Gateway's Service and EndpointSlice in its namespace", func() error {
		var err error
		if svc, err = client.CoreV1().Services(ns).Get(ctx, svcName, metav1.GetOptions{}); err != nil {
			return err
		}
		if svc.Labels["team"] != "edge" || svc.Labels[gateway.LabelAPIGatewayName] != g.Name || svc.Annotations["example.com/owner"] != "edge-team" || len(svc.Spec.Selector) != 0 {
			return fmt.Errorf("labels %v, annotations %v, selector %v", svc.Labels, svc.Annotations, svc.Spec.Selector)
		}
		return proxyPodsAreEndpoints(ctx, ns, svcName)
	})

	// A tenant who may write Services and EndpointSlices in the namespace
	// (RBAC allows all that follows; the admission policy refuses it).
	tenantRole := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "tenant"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"get", "create", "update", "patch", "delete"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "create", "update", "patch", "delete"}}}}
	if _, err := client.RbacV1().Roles(ns).Create(ctx, tenantRole, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "tenant"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "tenant"},
		Subjects: []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: "tenant"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tenant := impersonating(t, "tenant")
	refused := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "weft-ingress's") {
			t.Errorf("%s: want refused by the admission policy, got %v", what, err)
		}
	}
	eventually(t, 30*time.Second, "the tenant may annotate the Gateway's Service (RBAC in place)", func() error {
		_, err := tenant.CoreV1().Services(ns).Patch(ctx, svcName, types.MergePatchType, []byte(`{"metadata":{"annotations":{"note":"mine"}}}`), metav1.PatchOptions{})
		return err
	})
	_, err := tenant.CoreV1().Services(ns).Patch(ctx, svcName, types.JSONPatchType, []byte(`[{"op":"replace","path":"/spec/ports/0/targetPort","value":20999}]`), metav1.PatchOptions{})
	refused("changing the proxy port", err)
	_, err = tenant.CoreV1().Services(ns).Patch(ctx, svcName, types.MergePatchType, []byte(`{"metadata":{"labels":{"gateway.weft.dev/name":null}}}`), metav1.PatchOptions{})
	refused("removing weft's label", err)
	forged := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "forged", Labels: map[string]string{gateway.LabelGatewayName: "edge"}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	_, err = tenant.CoreV1().Services(ns).Create(ctx, forged, metav1.CreateOptions{})
	refused("creating a Service with weft's label", err)
	_, err = tenant.DiscoveryV1().EndpointSlices(ns).Patch(ctx, svcName+"-ipv4", types.JSONPatchType, []byte(`[{"op":"replace","path":"/endpoints/0/addresses/0","value":"10.244.0.99"}]`), metav1.PatchOptions{})
	refused("repointing the EndpointSlice", err)

	// weft ingress's ServiceAccount may write only Gateways' Services.
	conf := manifests.Defaults()
	ingress := impersonating(t, "system:serviceaccount:"+conf.Namespace+":"+manifests.IngressName, "system:serviceaccounts", "system:serviceaccounts:"+conf.Namespace)
	plain := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "plain"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := client.CoreV1().Services(ns).Create(ctx, plain, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	byIngress := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "weft-ingress may write only") {
			t.Errorf("weft ingress %s: want refused by the admission policy, got %v", what, err)
		}
	}
	cur, err := client.CoreV1().Services(ns).Get(ctx, "plain", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Ports[0].Port = 81
	_, err = ingress.CoreV1().Services(ns).Update(ctx, cur, metav1.UpdateOptions{})
	byIngress("changing a tenant's Service", err)
	cur.Labels = map[string]string{gateway.LabelGatewayName: "edge"}
	_, err = ingress.CoreV1().Services(ns).Update(ctx, cur, metav1.UpdateOptions{})
	byIngress("labelling a tenant's Service as a Gateway's", err)
	byIngress("deleting a tenant's Service", ingress.CoreV1().Services(ns).Delete(ctx, "plain", metav1.DeleteOptions{}))
	// The Gateway's deletion takes its Service with it.
	if err := gw.GatewayV1().Gateways(ns).Delete(ctx, g.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the Gateway's Service gone with it", func() error {
		if _, err := client.CoreV1().Services(ns).Get(ctx, svcName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
}

// proxyPodsAreEndpoints: the Service's EndpointSlices name every weft
// ingress pod by its address, ready.
func proxyPodsAreEndpoints(ctx context.Context, ns, svc string) error {
	conf := manifests.Defaults()
	pods, err := client.CoreV1().Pods(conf.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + manifests.IngressName})
	if err != nil || len(pods.Items) == 0 {
		return fmt.Errorf("weft ingress pods: %d, %v", len(pods.Items), err)
	}
	list, err := client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	if err != nil || len(list.Items) == 0 {
		return fmt.Errorf("EndpointSlices: %d, %v", len(list.Items), err)
	}
	var ready []string
	for _, sl := range list.Items {
		if sl.Labels[discoveryv1.LabelManagedBy] != gateway.ManagedBy {
			return fmt.Errorf("EndpointSlice %s managed by %q", sl.Name, sl.Labels[discoveryv1.LabelManagedBy])
		}
		for _, e := range sl.Endpoints {
			if e.Conditions.Ready != nil && *e.Conditions.Ready {
				ready = append(ready, e.Addresses...)
			}
		}
	}
	for _, p := range pods.Items {
		if !slices.Contains(ready, p.Status.PodIP) {
			return fmt.Errorf("weft ingress pod %s (%s) is not a ready endpoint: %v", p.Name, p.Status.PodIP, ready)
		}
	}
	return nil
}
