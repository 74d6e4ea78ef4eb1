package netpol

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
	npafake "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned/fake"
)

func TestValidateClusterPolicy(t *testing.T) {
	good := clusterPolicy("good", cnp.AdminTier, 1, "default", []cnp.ClusterNetworkPolicyIngressRule{fromNamespace(deny, "other", tcpPort(80))}, nil)
	if got := ValidateClusterPolicy(good); len(got) != 0 {
		t.Errorf("valid policy: %v", got)
	}
	domains := clusterPolicy("dns", cnp.AdminTier, 1, "default", nil, []cnp.ClusterNetworkPolicyEgressRule{
		{Action: accept, To: []cnp.ClusterNetworkPolicyEgressPeer{{Networks: []cnp.CIDR{"10.0.0.0/8"}}}},
		{Action: deny, To: []cnp.ClusterNetworkPolicyEgressPeer{{DomainNames: []cnp.DomainName{"api.example.com"}}}},
		{Action: accept, To: []cnp.ClusterNetworkPolicyEgressPeer{{Networks: []cnp.CIDR{"10.0.0.0/33"}}}},
		{Action: accept, To: []cnp.ClusterNetworkPolicyEgressPeer{{}}},
		{Action: "Allow"},
	})
	domains.Spec.Tier = "Middle"
	got := strings.Join(ValidateClusterPolicy(domains), "\n")
	for _, want := range []string{`tier "Middle"`, "egress[1]: domainNames are only allowed in Accept rules", `egress[2]: network "10.0.0.0/33"`, "egress[3]: a peer with nothing set", `egress[4]: action "Allow"`} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "egress[0]") {
		t.Errorf("a valid rule is reported:\n%s", got)
	}
}

// The writer sets Accepted once per generation: True for a policy it
// enforces whole, False naming what it leaves out; an unchanged policy
// is not written again.
func TestStatusWriterSetsAccepted(t *testing.T) {
	good := clusterPolicy("good", cnp.AdminTier, 1, "default", []cnp.ClusterNetworkPolicyIngressRule{fromNamespace(deny, "other")}, nil)
	bad := clusterPolicy("bad", cnp.BaselineTier, 1, "default", nil, []cnp.ClusterNetworkPolicyEgressRule{
		{Action: pass, To: []cnp.ClusterNetworkPolicyEgressPeer{{DomainNames: []cnp.DomainName{"api.example.com"}}}}})
	good.Generation, bad.Generation = 3, 1
	cs := npafake.NewSimpleClientset(good, bad)
	w := &StatusWriter{Policies: cs, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx := context.Background()
	for _, name := range []string{"good", "bad"} {
		p, _ := cs.PolicyV1beta1().ClusterNetworkPolicies().Get(ctx, name, metav1.GetOptions{})
		if err := w.sync(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	check := func(name string, status metav1.ConditionStatus, gen int64, msg string) *cnp.ClusterNetworkPolicy {
		t.Helper()
		p, _ := cs.PolicyV1beta1().ClusterNetworkPolicies().Get(ctx, name, metav1.GetOptions{})
		c := meta.FindStatusCondition(p.Status.Conditions, ConditionAccepted)
		if c == nil || c.Status != status || c.ObservedGeneration != gen || !strings.Contains(c.Message, msg) {
			t.Fatalf("%s: condition %+v, want %s at generation %d saying %q", name, c, status, gen, msg)
		}
		return p
	}
	check("good", metav1.ConditionTrue, 3, "every rule")
	p := check("bad", metav1.ConditionFalse, 1, "egress[0]: domainNames")
	before := len(cs.Actions())
	if err := w.sync(ctx, p); err != nil {
		t.Fatal(err)
	}
	if n := len(cs.Actions()) - before; n != 0 {
		t.Errorf("an unchanged policy was written again (%d actions)", n)
	}
}
