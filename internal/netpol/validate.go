package netpol

import (
	"fmt"
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
)

// ValidateClusterPolicy lists what of a ClusterNetworkPolicy weft leaves
// out, whatever the pods and nodes: the policy's status says it once for
// the cluster, where the compiler finds it only on nodes its subject
// reaches. The compiler checks with the same functions.
func ValidateClusterPolicy(p *cnp.ClusterNetworkPolicy) []string {
	var out []string
	if p.Spec.Tier != cnp.AdminTier && p.Spec.Tier != cnp.BaselineTier {
		out = append(out, fmt.Sprintf("tier %q is neither Admin nor Baseline", p.Spec.Tier))
	}
	if err := checkPodSelection(p.Spec.Subject.Namespaces, p.Spec.Subject.Pods); err != nil {
		out = append(out, fmt.Sprintf("subject: %v", err))
	}
	rule := func(where string, action cnp.ClusterNetworkPolicyRuleAction, peers []cnp.ClusterNetworkPolicyEgressPeer, protocols []cnp.ClusterNetworkPolicyProtocol) {
		if err := checkRule(action, peers, protocols); err != nil {
			out = append(out, fmt.Sprintf("%s: %v; the rule is left out", where, err))
		}
	}
	for i, r := range p.Spec.Ingress {
		rule(fmt.Sprintf("ingress[%d]", i), r.Action, ingressPeers(r.From), r.Protocols)
	}
	for i, r := range p.Spec.Egress {
		rule(fmt.Sprintf("egress[%d]", i), r.Action, r.To, r.Protocols)
	}
	return out
}

// ingressPeers widens ingress peers to the egress peer type (a subset).
func ingressPeers(from []cnp.ClusterNetworkPolicyIngressPeer) []cnp.ClusterNetworkPolicyEgressPeer {
	peers := make([]cnp.ClusterNetworkPolicyEgressPeer, len(from))
	for j, f := range from {
		peers[j] = cnp.ClusterNetworkPolicyEgressPeer{Namespaces: f.Namespaces, Pods: f.Pods}
	}
	return peers
}

// checkRule says why a rule cannot be compiled whole, if it cannot.
func checkRule(action cnp.ClusterNetworkPolicyRuleAction, peers []cnp.ClusterNetworkPolicyEgressPeer, protocols []cnp.ClusterNetworkPolicyProtocol) error {
	switch action {
	case cnp.ClusterNetworkPolicyRuleActionAccept, cnp.ClusterNetworkPolicyRuleActionDeny, cnp.ClusterNetworkPolicyRuleActionPass:
	default:
		return fmt.Errorf("action %q is not Accept, Deny or Pass", action)
	}
	for _, peer := range peers {
		if err := checkPeer(peer); err != nil {
			return err
		}
		if len(peer.DomainNames) > 0 && action != cnp.ClusterNetworkPolicyRuleActionAccept {
			return fmt.Errorf("domainNames are only allowed in Accept rules")
		}
	}
	return checkProtocols(protocols)
}

// checkPeer checks one peer: exactly one kind, selectors and networks
// that parse.
func checkPeer(peer cnp.ClusterNetworkPolicyEgressPeer) error {
	switch {
	case peer.Namespaces != nil || peer.Pods != nil:
		return checkPodSelection(peer.Namespaces, peer.Pods)
	case len(peer.Networks) > 0:
		for _, n := range peer.Networks {
			if _, err := netip.ParsePrefix(string(n)); err != nil {
				return fmt.Errorf("network %q: %v", n, err)
			}
		}
	case peer.Nodes != nil:
		if _, err := metav1.LabelSelectorAsSelector(peer.Nodes); err != nil {
			return fmt.Errorf("nodes: %v", err)
		}
	case len(peer.DomainNames) > 0:
		for _, n := range peer.DomainNames {
			if _, ok := normalizePattern(string(n)); !ok {
				return fmt.Errorf("domain name %q", n)
			}
		}
	default:
		return fmt.Errorf("a peer with nothing set")
	}
	return nil
}

// checkPodSelection checks a namespaces selector or a namespaced pod
// selector, exactly one of them set.
func checkPodSelection(namespaces *metav1.LabelSelector, pods *cnp.NamespacedPod) error {
	switch {
	case namespaces != nil && pods == nil:
		_, err := metav1.LabelSelectorAsSelector(namespaces)
		return err
	case pods != nil && namespaces == nil:
		if _, err := metav1.LabelSelectorAsSelector(&pods.NamespaceSelector); err != nil {
			return err
		}
		_, err := metav1.LabelSelectorAsSelector(&pods.PodSelector)
		return err
	}
	return fmt.Errorf("exactly one of namespaces and pods must be set")
}
