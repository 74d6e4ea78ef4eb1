//go:build e2e

package e2e

import (
	"context"
	"fmt"
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
)

// ClusterNetworkPolicy tiers on the lab, across nodes: a baseline Deny
// between tenants holds until a NetworkPolicy allows the traffic; an
// admin Deny beats that NetworkPolicy; changed to Pass, it hands the
// decision back to the NetworkPolicy.
func TestClusterNetworkPolicyTiers(t *testing.T) {
	cfg, err := clientcmd.BuildConfigFromFlags("", theLab.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	cs := npaclient.NewForConfigOrDie(cfg).PolicyV1beta1().ClusterNetworkPolicies()
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
