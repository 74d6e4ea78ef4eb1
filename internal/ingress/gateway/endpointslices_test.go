package gateway

import (
	"context"
	"log/slog"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

func proxyPod(name string, ready, deleting bool, phase corev1.PodPhase, ips ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: name}, Spec: corev1.PodSpec{NodeName: "node-" + name},
		Status: corev1.PodStatus{Phase: phase}}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	if deleting {
		p.DeletionTimestamp = &metav1.Time{}
	}
	return p
}

// One slice per family of the Service, at the proxy ports, naming each
// running proxy pod with its readiness; ended pods and pods without an
// address of the family are left out.
func TestPlanSlices(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "weft-gw-web-0011223344", UID: "s1",
		Labels: map[string]string{LabelGatewayName: "web", "team": "a"}},
		Spec: corev1.ServiceSpec{IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol},
			Ports: []corev1.ServicePort{{Name: "l80", Port: 80, TargetPort: intstr.FromInt32(20000)}, {Name: "l443", Port: 443, TargetPort: intstr.FromInt32(0)}}}}
	pods := []*corev1.Pod{
		proxyPod("c", true, true, corev1.PodRunning, "10.0.0.3", "fd00::3"),
		proxyPod("a", true, false, corev1.PodRunning, "10.0.0.1", "fd00::1"),
		proxyPod("b", false, false, corev1.PodRunning, "10.0.0.2"),
		proxyPod("d", true, false, corev1.PodSucceeded, "10.0.0.4"),
	}
	got := PlanSlices(svc, pods)
	if len(got) != 2 || got[0].Name != svc.Name+"-ipv4" || got[0].AddressType != discoveryv1.AddressTypeIPv4 || got[1].AddressType != discoveryv1.AddressTypeIPv6 {
		t.Fatalf("slices %v", got)
	}
	v4 := got[0]
	if v4.Labels[discoveryv1.LabelServiceName] != svc.Name || v4.Labels[discoveryv1.LabelManagedBy] != ManagedBy || v4.Labels["team"] != "a" {
		t.Errorf("labels %v", v4.Labels)
	}
	if len(v4.Ports) != 1 || *v4.Ports[0].Name != "l80" || *v4.Ports[0].Port != 20000 {
		t.Errorf("ports %v (a port without a proxy port is left out)", v4.Ports)
	}
	type cond struct{ ready, serving, terminating bool }
	want := map[string]cond{"10.0.0.1": {true, true, false}, "10.0.0.2": {false, false, false}, "10.0.0.3": {false, true, true}}
	if len(v4.Endpoints) != len(want) {
		t.Fatalf("IPv4 endpoints %v", v4.Endpoints)
	}
	for _, e := range v4.Endpoints {
		c := e.Conditions
		if w, ok := want[e.Addresses[0]]; !ok || (cond{*c.Ready, *c.Serving, *c.Terminating}) != w {
			t.Errorf("%s: %+v", e.Addresses[0], cond{*c.Ready, *c.Serving, *c.Terminating})
		}
	}
	if v4.Endpoints[0].Addresses[0] != "10.0.0.1" || *v4.Endpoints[0].NodeName != "node-a" || v4.Endpoints[0].TargetRef.Name != "a" {
		t.Errorf("first endpoint %+v", v4.Endpoints[0])
	}
	if v6 := got[1]; len(v6.Endpoints) != 2 || v6.Endpoints[0].Addresses[0] != "fd00::1" {
		t.Errorf("IPv6 endpoints %v", v6.Endpoints)
	}
	if o := v4.OwnerReferences; len(o) != 1 || o[0].Kind != "Service" || o[0].UID != "s1" {
		t.Errorf("owner %v", o)
	}
	if !sameSlice(v4, PlanSlices(svc, pods)[0]) {
		t.Error("a plan differs from itself")
	}
}

// A slice written once, as the informer then holds it, is not written
// again while nothing changes.
func TestSlicesAreWrittenOnlyWhenTheyChange(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "weft-gw-web-0011223344", UID: "s1",
		Labels: map[string]string{LabelGatewayName: "web"}},
		Spec: corev1.ServiceSpec{IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
			Ports: []corev1.ServicePort{{Name: "l80", Port: 80, TargetPort: intstr.FromInt32(20000)}}}}
	index := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	pods, slices := index(), index()
	if err := pods.Add(proxyPod("a", true, false, corev1.PodRunning, "10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	c := New(Config{Namespace: "kube-system"}, client, nil, slog.New(slog.DiscardHandler), func() {})
	w := &watched{pods: corelisters.NewPodLister(pods), slices: discoverylisters.NewEndpointSliceLister(slices)}
	c.ensureSlices(context.Background(), svc, w)
	written, err := client.DiscoveryV1().EndpointSlices("team").Get(context.Background(), svc.Name+"-ipv4", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	held, _ := keepSlice(written.DeepCopy())
	if err := slices.Add(held); err != nil {
		t.Fatal(err)
	}
	client.ClearActions()
	c.ensureSlices(context.Background(), svc, w)
	for _, a := range client.Actions() {
		if a.GetVerb() != "get" && a.GetVerb() != "list" {
			t.Errorf("a second pass with nothing changed wrote: %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
}
