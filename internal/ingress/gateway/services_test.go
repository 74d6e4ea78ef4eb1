package gateway

import (
	"context"
	"log/slog"
	"maps"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func gwService(name, rv string, ports ...int32) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, ResourceVersion: rv, Labels: map[string]string{LabelGatewayName: name}}}
	for i, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Port: int32(80 + i), TargetPort: intstr.FromInt32(p)})
	}
	return s
}

// Two Gateways' Services naming one proxy port (a sync that saw a stale
// cache): the second by name is given a new port; the first keeps its.
func TestUniquePortsReassignsASharedProxyPort(t *testing.T) {
	a, b := gwService("a", "1", 20000), gwService("b", "2", 20000, 20001)
	olds := UniquePorts(map[string]*corev1.Service{"a": a, "b": b})
	if olds["a"].Spec.Ports[0].TargetPort.IntValue() != 20000 || olds["b"].Spec.Ports[0].TargetPort.IntValue() != 0 || olds["b"].Spec.Ports[1].TargetPort.IntValue() != 20001 {
		t.Fatalf("after: a %v, b %v", olds["a"].Spec.Ports, olds["b"].Spec.Ports)
	}
	if b.Spec.Ports[0].TargetPort.IntValue() != 20000 {
		t.Error("the informer's copy was changed")
	}
	used := map[int]bool{20000: true, 20001: true}
	g := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "b"}, Spec: gwv1.GatewaySpec{Listeners: []gwv1.Listener{{Port: 80}, {Port: 81}}}}
	svc := PlanService(g, nil, Config{}, olds["b"], used)
	if got := svc.Spec.Ports[0].TargetPort.IntValue(); got == 20000 || got == 20001 || got < FirstProxyPort {
		t.Errorf("b's port 80 got proxy port %d", got)
	}
	if got := svc.Spec.Ports[1].TargetPort.IntValue(); got != 20001 {
		t.Errorf("b's port 81 moved to %d", got)
	}
}

// A Service this controller just wrote counts until the informer has it.
func TestRecentServicesOverlayTheCache(t *testing.T) {
	c := &Controller{recent: map[string]*corev1.Service{"a": gwService("a", "5", 20000), "b": gwService("b", "3", 20001)}}
	byName := map[string]*corev1.Service{"b": gwService("b", "4", 20002)}
	c.overlayRecent(byName)
	if byName["a"] == nil || byName["a"].Spec.Ports[0].TargetPort.IntValue() != 20000 {
		t.Error("a Service not yet in the cache was not counted")
	}
	if byName["b"].ResourceVersion != "4" || c.recent["b"] != nil {
		t.Error("the cache's newer copy did not win")
	}
}

func TestStaticAddressProblem(t *testing.T) {
	addr := func(v string) gwv1.GatewaySpecAddress {
		return gwv1.GatewaySpecAddress{Type: ptr(gwv1.IPAddressType), Value: v}
	}
	for _, c := range []struct {
		name     string
		addrs    []gwv1.GatewaySpecAddress
		assigned []string
		problem  bool
	}{
		{"none asked", nil, []string{"198.19.100.1"}, false},
		{"given", []gwv1.GatewaySpecAddress{addr("198.19.100.9")}, []string{"198.19.100.9"}, false},
		{"not given yet", []gwv1.GatewaySpecAddress{addr("198.19.100.9")}, nil, false},
		{"given another", []gwv1.GatewaySpecAddress{addr("192.0.2.1")}, []string{"198.19.100.1"}, true},
		{"two of a family", []gwv1.GatewaySpecAddress{addr("192.0.2.1"), addr("198.19.100.9")}, nil, true},
		{"one per family", []gwv1.GatewaySpecAddress{addr("198.19.100.9"), addr("fd00::9")}, []string{"198.19.100.9", "fd00::9"}, false},
		{"not an address", []gwv1.GatewaySpecAddress{addr("example.com")}, nil, true},
	} {
		g := &gwv1.Gateway{Spec: gwv1.GatewaySpec{Addresses: c.addrs}}
		if got := staticAddressProblem(g, c.assigned); (got != "") != c.problem {
			t.Errorf("%s: %q", c.name, got)
		}
	}
}

// A Gateway's Service is in its namespace, owned by it, without a
// selector, with spec.infrastructure's labels and annotations (weft's
// labels win over them).
func TestPlanServiceInTheGatewaysNamespace(t *testing.T) {
	g := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "web", UID: "u1"}, Spec: gwv1.GatewaySpec{
		Listeners: []gwv1.Listener{{Port: 80}},
		Infrastructure: &gwv1.GatewayInfrastructure{
			Labels:      map[gwv1.LabelKey]gwv1.LabelValue{"team": "a", LabelGatewayName: "other"},
			Annotations: map[gwv1.AnnotationKey]gwv1.AnnotationValue{"b.example/x": "1", "a.example/y": "2"}}}}
	svc := PlanService(g, nil, Config{Namespace: "kube-system", Selector: map[string]string{"app": "proxy"}}, nil, map[int]bool{})
	if svc.Namespace != "team" || len(svc.Spec.Selector) != 0 {
		t.Errorf("namespace %q, selector %v", svc.Namespace, svc.Spec.Selector)
	}
	wantLabels := map[string]string{"team": "a", LabelGatewayName: "web", LabelGatewayNamespace: "team", LabelAPIGatewayName: "web"}
	if !maps.Equal(svc.Labels, wantLabels) {
		t.Errorf("labels %v", svc.Labels)
	}
	wantAnn := map[string]string{"b.example/x": "1", "a.example/y": "2", AnnotationPropagated: "a.example/y,b.example/x"}
	if !maps.Equal(svc.Annotations, wantAnn) {
		t.Errorf("annotations %v", svc.Annotations)
	}
	if o := svc.OwnerReferences; len(o) != 1 || o[0].Kind != "Gateway" || o[0].Name != "web" || o[0].UID != "u1" {
		t.Errorf("owner %v", o)
	}
}

// The annotations weft propagated before are replaced; a user's stay.
func TestMergeAnnotationsReplacesOnlyThePropagated(t *testing.T) {
	cur := map[string]string{"old": "1", "user": "2", AnnotationPropagated: "old"}
	got := mergeAnnotations(cur, map[string]string{"new": "3", AnnotationPropagated: "new"})
	if want := map[string]string{"user": "2", "new": "3", AnnotationPropagated: "new"}; !maps.Equal(got, want) {
		t.Errorf("got %v", got)
	}
}

// The Service weft made before in its own namespace lends its proxy
// ports to the new one, but not a port another Gateway holds by now.
func TestPlanServiceKeepsTheOldNamespacesPorts(t *testing.T) {
	legacy := gwService("web", "1", 20000, 20001)
	legacy.Namespace = "kube-system"
	g := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "web"}, Spec: gwv1.GatewaySpec{Listeners: []gwv1.Listener{{Port: 80}, {Port: 81}}}}
	svc := PlanService(g, nil, Config{}, legacy, map[int]bool{20001: true})
	if got := svc.Spec.Ports[0].TargetPort.IntValue(); got != 20000 {
		t.Errorf("port 80 went to proxy port %d, not its old 20000", got)
	}
	if got := svc.Spec.Ports[1].TargetPort.IntValue(); got == 20001 || got < FirstProxyPort {
		t.Errorf("port 81 went to proxy port %d (20001 is another's)", got)
	}
}

// moveRig is a controller with a fake API server holding a Service weft
// made in its own namespace before (with a selector, proxy port 20007)
// for Gateway team/web, and listers that see it.
func moveRig(t *testing.T, leader bool) (*Controller, *fake.Clientset, *watched, *gwv1.Gateway) {
	t.Helper()
	g := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "web", UID: "g1"}, Spec: gwv1.GatewaySpec{Listeners: []gwv1.Listener{{Port: 80}}}}
	old := gwService(ServiceName("team", "web"), "7", 20007)
	old.Namespace, old.Labels[LabelGatewayNamespace] = "kube-system", "team"
	old.Spec.Selector = map[string]string{"app.kubernetes.io/name": "weft-ingress"}
	old.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.19.100.7"}}
	client := fake.NewClientset(old)
	index := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	services := index()
	if err := services.Add(old); err != nil {
		t.Fatal(err)
	}
	w := &watched{services: corelisters.NewServiceLister(services), pods: corelisters.NewPodLister(index()),
		slices: discoverylisters.NewEndpointSliceLister(index())}
	c := New(Config{Namespace: "kube-system"}, client, nil, slog.New(slog.DiscardHandler), func() {})
	c.leader.Store(leader)
	return c, client, w, g
}

// The leader moves a Gateway's Service from weft's namespace to the
// Gateway's, keeping its proxy port, and deletes the old one only then.
func TestLeaderMovesTheOldServiceKeepingItsPort(t *testing.T) {
	c, client, w, g := moveRig(t, true)
	ports, _ := c.ensureServices(context.Background(), []*gwv1.Gateway{g}, nil, w)
	if got := ports[types.NamespacedName{Namespace: "team", Name: "web"}][80]; got != 20007 {
		t.Errorf("port 80 served on proxy port %d, want the old 20007", got)
	}
	moved, err := client.CoreV1().Services("team").Get(context.Background(), ServiceName("team", "web"), metav1.GetOptions{})
	if err != nil || moved.Spec.Ports[0].TargetPort.IntValue() != 20007 || len(moved.Spec.Selector) != 0 {
		t.Fatalf("the Service in the Gateway's namespace: %v, %v", moved, err)
	}
	if _, err := client.CoreV1().Services("kube-system").Get(context.Background(), ServiceName("team", "web"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the old Service is still there: %v", err)
	}
}

// A replica that does not lead serves the old Service's ports until the
// leader has moved it.
func TestFollowerServesTheOldServiceUntilMoved(t *testing.T) {
	c, client, w, g := moveRig(t, false)
	ports, addrs := c.ensureServices(context.Background(), []*gwv1.Gateway{g}, nil, w)
	key := types.NamespacedName{Namespace: "team", Name: "web"}
	if ports[key][80] != 20007 || len(addrs[key]) != 1 {
		t.Errorf("ports %v, addresses %v: want the old Service's", ports[key], addrs[key])
	}
	if list, _ := client.CoreV1().Services("").List(context.Background(), metav1.ListOptions{}); len(list.Items) != 1 || list.Items[0].Namespace != "kube-system" {
		t.Errorf("a follower wrote Services: %v", list.Items)
	}
}
