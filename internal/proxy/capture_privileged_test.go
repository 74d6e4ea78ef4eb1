package proxy

import (
	"strings"
	"testing"
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
