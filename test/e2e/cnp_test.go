//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
	npaclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"
	npav1beta1 "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned/typed/apis/v1beta1"

	"weft.dev/weft/internal/lab"
)

func clusterPolicies(t *testing.T) npav1beta1.ClusterNetworkPolicyInterface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", theLab.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	return npaclient.NewForConfigOrDie(cfg).PolicyV1beta1().ClusterNetworkPolicies()
}

// ClusterNetworkPolicy tiers on the lab, across nodes: a baseline Deny
// between tenants holds until a NetworkPolicy allows the traffic; an
// admin Deny beats that NetworkPolicy; changed to Pass, it hands the
// decision back to the NetworkPolicy.
func TestClusterNetworkPolicyTiers(t *testing.T) {
	cs := clusterPolicies(t)
	ctx := context.Background()
	ns, peerNS := newNamespace(t), newNamespace(t)
	if _, err := client.CoreV1().Namespaces().Patch(ctx, peerNS, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"team":"peer"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := createReady(t, pinnedPod(ns, "server", "weft-node-1"), pinnedPod(peerNS, "peer", "weft-node-2"))
	server, peer := ip(pods["server"]), peerNS+"/peer"
	wantReach(t, peer, server, 8080, true)

	subject := cnp.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}}
	fromPeers := []cnp.ClusterNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "peer"}}}}
	create := func(name string, tier cnp.Tier, action cnp.ClusterNetworkPolicyRuleAction) {
		t.Helper()
		p := &cnp.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: cnp.ClusterNetworkPolicySpec{Tier: tier, Priority: 10, Subject: subject,
				Ingress: []cnp.ClusterNetworkPolicyIngressRule{{Action: action, From: fromPeers}}}}
		if _, err := cs.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cs.Delete(context.Background(), name, metav1.DeleteOptions{}) })
	}

	create(ns+"-baseline", cnp.BaselineTier, cnp.ClusterNetworkPolicyRuleActionDeny)
	wantReach(t, peer, server, 8080, false)

	allow := netpol(ns, "allow-peers", map[string]string{"app": "server"}, polIngress)
	allow.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
		{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "peer"}}}}}}
	createPolicy(t, allow)
	wantReach(t, peer, server, 8080, true) // NetworkPolicy overrides the baseline

	create(ns+"-admin", cnp.AdminTier, cnp.ClusterNetworkPolicyRuleActionDeny)
	wantReach(t, peer, server, 8080, false) // the admin Deny beats it

	admin, err := cs.Get(ctx, ns+"-admin", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	admin.Spec.Ingress[0].Action = cnp.ClusterNetworkPolicyRuleActionPass
	if _, err := cs.Update(ctx, admin, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wantReach(t, peer, server, 8080, true) // passed to the NetworkPolicy

	// Status: Accepted at the new generation; a policy with a rule weft
	// cannot enforce says which, and the others keep working.
	wantAccepted := func(name string, want metav1.ConditionStatus, says string) {
		t.Helper()
		eventually(t, 30*time.Second, name+" Accepted="+string(want), func() error {
			p, err := cs.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			c := meta.FindStatusCondition(p.Status.Conditions, "Accepted")
			if c == nil || c.Status != want || c.ObservedGeneration != p.Generation || !strings.Contains(c.Message, says) {
				return fmt.Errorf("conditions %+v at generation %d", p.Status.Conditions, p.Generation)
			}
			return nil
		})
	}
	wantAccepted(ns+"-admin", metav1.ConditionTrue, "every rule")
	bad := &cnp.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: ns + "-domains"},
		Spec: cnp.ClusterNetworkPolicySpec{Tier: cnp.AdminTier, Priority: 5, Subject: subject,
			Egress: []cnp.ClusterNetworkPolicyEgressRule{{Action: cnp.ClusterNetworkPolicyRuleActionDeny,
				To: []cnp.ClusterNetworkPolicyEgressPeer{{DomainNames: []cnp.DomainName{"api.example.com"}}}}}}}
	if _, err := cs.Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Delete(context.Background(), bad.Name, metav1.DeleteOptions{}) })
	wantAccepted(bad.Name, metav1.ConditionFalse, "egress[0]: domainNames are only allowed in Accept rules")
	wantReach(t, peer, server, 8080, true)
}

// A domain-name egress allow: the pod reaches the addresses the outside
// zone answered for the name as soon as it has the answer, nothing else
// of the denied range, and follows a changed answer once the old TTL ran
// out.
func TestClusterNetworkPolicyDomainNames(t *testing.T) {
	cs := clusterPolicies(t)
	ctx := context.Background()
	const first, second = "203.0.113.10", "203.0.113.11"
	if out, err := hostCommand("ip", "-n", lab.OutsideNS, "addr", "add", second+"/24", "dev", "eth0"); err != nil {
		t.Fatalf("second outside address: %v %s", err, out)
	}
	t.Cleanup(func() { _, _ = hostCommand("ip", "-n", lab.OutsideNS, "addr", "del", second+"/24", "dev", "eth0") })
	records := func(addr string) {
		t.Helper()
		if err := os.WriteFile(theLab.OutsideRecords(), []byte("api.outside.test 5 "+addr+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	records(first)
	t.Cleanup(func() { _ = os.Remove(theLab.OutsideRecords()) })

	ns := newNamespace(t)
	client := ns + "/client"
	createReady(t, pinnedPod(ns, "client", "weft-node-1"))
	wantReach(t, client, first, 8080, true)
	subject := cnp.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}}
	for _, p := range []*cnp.ClusterNetworkPolicy{
		{ObjectMeta: metav1.ObjectMeta{Name: ns + "-api"}, Spec: cnp.ClusterNetworkPolicySpec{Tier: cnp.AdminTier, Priority: 10, Subject: subject,
			Egress: []cnp.ClusterNetworkPolicyEgressRule{{Action: cnp.ClusterNetworkPolicyRuleActionAccept,
				To: []cnp.ClusterNetworkPolicyEgressPeer{{DomainNames: []cnp.DomainName{"api.outside.test"}}}}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: ns + "-outside"}, Spec: cnp.ClusterNetworkPolicySpec{Tier: cnp.AdminTier, Priority: 20, Subject: subject,
			Egress: []cnp.ClusterNetworkPolicyEgressRule{{Action: cnp.ClusterNetworkPolicyRuleActionDeny,
				To: []cnp.ClusterNetworkPolicyEgressPeer{{Networks: []cnp.CIDR{"203.0.113.0/24"}}}}}}},
	} {
		if _, err := cs.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		name := p.Name
		t.Cleanup(func() { _ = cs.Delete(context.Background(), name, metav1.DeleteOptions{}) })
	}
	wantReach(t, client, first, 8080, false) // not looked up yet

	if got := dig(t, client, "api.outside.test"); strings.Join(got, " ") != first {
		t.Fatalf("dig api.outside.test = %v, want %s", got, first)
	}
	// Written before the answer left: no waiting.
	if !reaches(t, client, first, 8080) {
		t.Fatalf("%s not reached right after the answer", first)
	}
	if reaches(t, client, second, 8080) {
		t.Fatalf("%s reached: never answered", second)
	}

	records(second)
	eventually(t, 30*time.Second, "the changed answer", func() error {
		if got := dig(t, client, "api.outside.test"); strings.Join(got, " ") != second {
			return fmt.Errorf("dig = %v", got)
		}
		return nil
	})
	if !reaches(t, client, second, 8080) {
		t.Fatalf("%s not reached right after the changed answer", second)
	}
	wantReach(t, client, first, 8080, false) // its TTL ran out
}
