package proxy

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
)

// A tenant's Service cannot capture a node's address with externalIPs
// (CVE-2020-8554 class): traffic to the node's own port still reaches the
// node, while an allowed externalIP of the same Service works.
func TestPrivilegedExternalIPCannotCaptureNodeAddress(t *testing.T) {
	tp := newTopo(t)
	serve(t, tp.server, "10.244.1.2:8080")
	serveName(t, tp.node, "198.18.100.1:8080", "node")
	svc := service("grab", "10.96.0.70", 8080, 0)
	svc.Spec.ExternalIPs = []string{"198.18.100.1", "10.96.0.1", "203.0.113.50"}
	h := startProxy(t, tp, svc, slice("grab", "10.244.1.2", 8080, true))
	h.p.SetNodeAddresses(map[string]string{"198.18.100.1": "node n1"})
	h.sync()
	if got, err := dial(tp.client, "198.18.100.1:8080"); err != nil || !strings.HasPrefix(got, "node ") {
		t.Fatalf("the node's own port: %q %v (want the node's server, not the Service)", got, err)
	}
	// External traffic is masqueraded: the endpoint sees the node.
	if got, err := dial(tp.client, "203.0.113.50:8080"); err != nil || got != "10.244.1.1" {
		t.Fatalf("allowed externalIP: %q %v", got, err)
	}
	r := h.p.refused["default/grab"]
	if !strings.Contains(r, "198.18.100.1 is node n1") || !strings.Contains(r, "10.96.0.1 is inside the cluster network") {
		t.Fatalf("refusals reported: %q", r)
	}
	// The guard lifts when the address is no longer a node's.
	h.p.SetNodeAddresses(map[string]string{})
	h.sync()
	if got, err := dial(tp.client, "198.18.100.1:8080"); err != nil || got != "10.244.1.1" {
		t.Fatalf("after the node address went away: %q %v (want the Service's endpoint)", got, err)
	}
}

// Two Services with the same externalIP and port: the older one gets the
// traffic, the newer one an ExternalAddressConflict Event; deleting the
// older hands the address to the newer.
func TestPrivilegedExternalIPClash(t *testing.T) {
	tp := newTopo(t)
	serveName(t, tp.server, "10.244.1.2:8080", "older")
	serveName(t, tp.server, "10.244.1.2:8081", "newer")
	older := service("older", "10.96.0.71", 80, 0)
	older.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Hour))
	newer := service("newer", "10.96.0.72", 80, 0)
	newer.CreationTimestamp = metav1.NewTime(time.Now())
	for _, s := range []*corev1.Service{older, newer} {
		s.Spec.ExternalIPs = []string{"203.0.113.60"}
	}
	h := startProxy(t, tp, newer, slice("newer", "10.244.1.2", 8081, true), older, slice("older", "10.244.1.2", 8080, true))
	if got, err := dial(tp.client, "203.0.113.60:80"); err != nil || !strings.HasPrefix(got, "older ") {
		t.Fatalf("the clashing address: %q %v, want the older Service", got, err)
	}
	rec := record.NewFakeRecorder(10)
	h.p.Recorder, h.p.conflicts = rec, map[string]string{} // report again, now to rec
	h.sync()
	select {
	case ev := <-rec.Events:
		if !strings.Contains(ev, "ExternalAddressConflict") || !strings.Contains(ev, "203.0.113.60:80/TCP is held by default/older") {
			t.Fatalf("event %q", ev)
		}
	default:
		t.Fatal("no Event for the Service that lost the address")
	}
	if err := h.client.CoreV1().Services("default").Delete(h.ctx, "older", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, func() bool { _, err := h.p.services.Services("default").Get("older"); return err != nil })
	h.sync()
	if got, err := dial(tp.client, "203.0.113.60:80"); err != nil || !strings.HasPrefix(got, "newer ") {
		t.Fatalf("after the older Service went: %q %v, want the newer", got, err)
	}
}
