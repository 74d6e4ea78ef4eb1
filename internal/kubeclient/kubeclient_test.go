package kubeclient

import (
	"context"
	"net"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// A dial to an address nobody listens on yet waits, and connects as soon
// as a listener appears; a canceled context ends the wait.
func TestDialPatientlyWaitsForTheServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // refused until it listens again
	dial := DialPatiently(20 * time.Millisecond)
	done := make(chan error, 1)
	go func() {
		c, err := dial(context.Background(), "tcp", addr)
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("returned while nothing listened: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("after the server came back: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still waiting after the server came back")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := dial(ctx, "tcp", "127.0.0.1:1"); err == nil {
		t.Fatal("a dial to a closed port succeeded")
	}
}

func TestSlimDropsWhatNobodyReads(t *testing.T) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1",
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}},
		Annotations:   map[string]string{corev1.LastAppliedConfigAnnotation: "{...}", "weft.dev/vxlan-vtep-mac": "02:00:00:00:00:01"},
		Labels:        map[string]string{corev1.LabelTopologyZone: "a"}},
		Spec:   corev1.NodeSpec{PodCIDRs: []string{"10.244.1.0/24"}},
		Status: corev1.NodeStatus{Images: []corev1.ContainerImage{{Names: []string{"x"}}}, Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.1.11"}}}}
	out, err := Slim(n)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.Node)
	if got.ManagedFields != nil || got.Status.Images != nil || got.Annotations[corev1.LastAppliedConfigAnnotation] != "" {
		t.Errorf("kept: %+v", got)
	}
	if got.Annotations["weft.dev/vxlan-vtep-mac"] == "" || got.Labels[corev1.LabelTopologyZone] != "a" || len(got.Spec.PodCIDRs) != 1 || len(got.Status.Addresses) != 1 {
		t.Errorf("dropped what weft reads: %+v", got)
	}
	es := &discoveryv1.EndpointSlice{Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, Hostname: ptr.To("db-0"),
		TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "db-0"}}}}
	if out, _ := Slim(es); out.(*discoveryv1.EndpointSlice).Endpoints[0].TargetRef != nil || *out.(*discoveryv1.EndpointSlice).Endpoints[0].Hostname != "db-0" {
		t.Errorf("slice: %+v", out)
	}
	if _, err := Slim(cache.DeletedFinalStateUnknown{Key: "n1"}); err != nil {
		t.Errorf("tombstone: %v", err)
	}
}
