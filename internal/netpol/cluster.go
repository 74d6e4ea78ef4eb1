package netpol

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
)

// ClusterNetworkPolicies (sigs.k8s.io/network-policy-api v1beta1) sit in
// two tiers around NetworkPolicy. Each direction's hook chain runs:
//
//	admin dispatch (jump) ─▶ NetworkPolicy dispatch (goto) ─▶ baseline dispatch (jump) ─▶ allowed
//
// A pod's admin group chain holds the rules of every Admin policy that
// selects it, inlined in priority order (ties by name): Accept accepts,
// Deny goes to the deny chain, Pass returns to the hook chain, which
// hands the packet to NetworkPolicy; no match returns too. A pod that
// NetworkPolicy isolates is decided there and never reaches the baseline
// tier; for the others the baseline group chain runs the same way, and
// what it does not deny is allowed.

// tier is one of the two tiers' compiled state for a direction.
type tier struct {
	name string // "admin" / "baseline"
	// rules is each policy's compiled rules (by policy name).
	rules map[string][]Rule
	// selects lists, per local pod address, the policies selecting it,
	// in order.
	selects map[netip.Addr][]string
}

// clusterTiers compiles every ClusterNetworkPolicy into its tier's group
// chains and dispatch maps.
func (c *compiler) clusterTiers() {
	pols := append([]*cnp.ClusterNetworkPolicy(nil), c.in.ClusterPolicies...)
	sort.Slice(pols, func(i, j int) bool {
		if pols[i].Spec.Priority != pols[j].Spec.Priority {
			return pols[i].Spec.Priority < pols[j].Spec.Priority
		}
		return pols[i].Name < pols[j].Name
	})
	for _, t := range []cnp.Tier{cnp.AdminTier, cnp.BaselineTier} {
		for _, d := range []direction{dirIngress, dirEgress} {
			tr := &tier{name: tierName(t), rules: map[string][]Rule{}, selects: map[netip.Addr][]string{}}
			for _, p := range pols {
				if p.Spec.Tier == t {
					c.clusterPolicy(p, d, tr)
				}
			}
			c.tierGroups(tr, d)
		}
	}
	for _, p := range pols {
		if p.Spec.Tier != cnp.AdminTier && p.Spec.Tier != cnp.BaselineTier {
			c.clusterProblem(p, "tier %q is neither Admin nor Baseline", p.Spec.Tier)
		}
	}
}

func tierName(t cnp.Tier) string {
	if t == cnp.AdminTier {
		return "admin"
	}
	return "baseline"
}

func (c *compiler) clusterProblem(p *cnp.ClusterNetworkPolicy, format string, args ...any) {
	c.rs.Problems = append(c.rs.Problems, Problem{Name: p.Name, Message: fmt.Sprintf(format, args...)})
}

// clusterPolicy compiles one policy's rules of direction d if it selects
// a pod of this node.
func (c *compiler) clusterPolicy(p *cnp.ClusterNetworkPolicy, d direction, tr *tier) {
	match, err := c.podMatcher(p.Spec.Subject.Namespaces, p.Spec.Subject.Pods)
	if err != nil {
		c.clusterProblem(p, "subject: %v", err)
		return
	}
	local := c.matching("cnp-subject/"+p.Name+"/"+string(p.UID)+"/"+p.ResourceVersion, func(q *pod) bool {
		return q.local && !q.hostNetwork && match(q)
	})
	if len(local) == 0 {
		return
	}
	var rules []Rule
	if d == dirIngress {
		for i, r := range p.Spec.Ingress {
			rules = append(rules, c.clusterRule(p, d, tr, fmt.Sprintf("ingress[%d]", i), r.Action, ingressPeers(r.From), r.Protocols, local)...)
		}
	} else {
		for i, r := range p.Spec.Egress {
			rules = append(rules, c.clusterRule(p, d, tr, fmt.Sprintf("egress[%d]", i), r.Action, r.To, r.Protocols, local)...)
		}
	}
	tr.rules[p.Name] = rules
	for _, q := range local {
		for _, ip := range q.ips {
			tr.selects[ip] = append(tr.selects[ip], p.Name)
		}
	}
}

// denyChain is where a Deny rule of a policy sends a packet: a chain of its
// own whose log prefix names the direction, tier and policy, so that the
// denial log and metrics say who decided. Only cluster admins create these
// policies, so their count (and the log rate, bounded per chain) is theirs.
func (c *compiler) denyChain(d direction, tierName, policy string) string {
	name := d.deny + "-" + tierName + "-" + shortHash(policy)
	c.rs.chain(&Chain{Name: name, Comment: "denied by " + tierName + " ClusterNetworkPolicy " + policy,
		Rules: []Rule{{Kind: KindLog, Addr: DenyLogPrefix(d.name, tierName, policy)}, {Kind: KindDeny}}})
	return name
}

// DenyLogPrefix is the log prefix of a tier's deny chain: "<direction>
// <tier> <policy>", cut to the kernel's limit on prefixes.
func DenyLogPrefix(direction, tierName, policy string) string {
	s := direction + " " + tierName + " " + policy
	if len(s) > maxLogPrefix {
		s = s[:maxLogPrefix]
	}
	return s
}

// maxLogPrefix is the longest log prefix nftables takes (NF_LOG_PREFIXLEN
// less the terminating zero).
const maxLogPrefix = 127

// podMatcher matches pods by a namespaces selector or a namespaced pod
// selector (exactly one is set).
func (c *compiler) podMatcher(namespaces *metav1.LabelSelector, pods *cnp.NamespacedPod) (func(*pod) bool, error) {
	if err := checkPodSelection(namespaces, pods); err != nil {
		return nil, err
	}
	if namespaces != nil {
		ns, _ := metav1.LabelSelectorAsSelector(namespaces)
		return func(q *pod) bool { return ns.Matches(c.namespaceLabels(q.namespace)) }, nil
	}
	ns, _ := metav1.LabelSelectorAsSelector(&pods.NamespaceSelector)
	ps, _ := metav1.LabelSelectorAsSelector(&pods.PodSelector)
	return func(q *pod) bool { return ns.Matches(c.namespaceLabels(q.namespace)) && ps.Matches(q.labels) }, nil
}

// clusterRule compiles one rule: every combination of its peers' address
// sets and its ports, ending in the action's verdict. A rule that cannot
// be compiled whole is left out and reported.
func (c *compiler) clusterRule(p *cnp.ClusterNetworkPolicy, d direction, tr *tier, where string, action cnp.ClusterNetworkPolicyRuleAction,
	peers []cnp.ClusterNetworkPolicyEgressPeer, protocols []cnp.ClusterNetworkPolicyProtocol, local []*pod) []Rule {
	if err := checkRule(action, peers, protocols); err != nil {
		c.clusterProblem(p, "%s: %v; the rule is left out", where, err)
		return nil
	}
	verdict := map[cnp.ClusterNetworkPolicyRuleAction]string{
		cnp.ClusterNetworkPolicyRuleActionAccept: "accept",
		cnp.ClusterNetworkPolicyRuleActionDeny:   "goto " + c.denyChain(d, tr.name, p.Name),
		cnp.ClusterNetworkPolicyRuleActionPass:   "return",
	}[action]
	pods, blocks := c.clusterPeers(peers)
	domains := domainPatterns(peers)
	numeric, named := clusterPorts(protocols)
	var portSet *Set
	if len(numeric) > 0 {
		id := shortHash("cnp-ports", p.Name, where, fmt.Sprint(numeric))
		portSet = &Set{Name: "ports-" + id, Type: "inet_proto . inet_service", Interval: true, Comment: "ports of a cluster policy rule", Elems: mergePorts(numeric)}
		c.rs.Sets[portSet.Name] = portSet
	}
	var out []Rule
	for _, f := range families {
		var matches []string
		if pods != nil {
			matches = append(matches, c.podSet(f, shortHash("cnp-peers", p.Name, string(p.UID), p.ResourceVersion, where), pods))
		}
		if b, ok := blocks[f.suffix]; ok {
			matches = append(matches, c.blockSet(f, b))
		}
		var dnsSet string
		if len(domains) > 0 {
			dnsSet = c.domainSet(f, domains)
			matches = append(matches, dnsSet)
			// Connections a domain rule accepted stay accepted after the
			// address's TTL, judged here, below the rules before it.
			out = append(out, Rule{Kind: KindKeepDomain, Fam: f.fam})
		}
		for _, m := range matches {
			x := Rule{Kind: KindMatch, Fam: f.fam, Verdict: verdict, MarkDomain: m == dnsSet}
			if d == dirIngress {
				x.Src = m
			} else {
				x.Dst = m
			}
			if len(protocols) == 0 {
				out = append(out, x)
				continue
			}
			if portSet != nil {
				nr := x
				nr.Ports = portSet.Name
				out = append(out, nr)
			}
			if len(named) > 0 {
				// A named port is the destination pod's: the local pods'
				// for ingress, the peers' for egress.
				owners := local
				if d == dirEgress {
					owners = pods
				}
				nr := x
				nr.DstPorts = c.namedSet(f, shortHash("cnp-named", p.Name, string(p.UID), p.ResourceVersion, where, tr.name), owners, named)
				out = append(out, nr)
			}
		}
	}
	return out
}

// clusterPeers resolves a rule's peers, which checkPeer passed, into the
// pods they select (nil: no pod peer) and the address ranges of networks
// and nodes.
func (c *compiler) clusterPeers(peers []cnp.ClusterNetworkPolicyEgressPeer) ([]*pod, map[string]blockSet) {
	var pods []*pod
	var prefixes []netip.Prefix
	for _, peer := range peers {
		switch {
		case peer.Namespaces != nil || peer.Pods != nil:
			match, _ := c.podMatcher(peer.Namespaces, peer.Pods)
			if pods == nil {
				pods = []*pod{}
			}
			for _, q := range c.pods {
				if !q.hostNetwork && match(q) {
					pods = append(pods, q)
				}
			}
		case len(peer.Networks) > 0:
			for _, n := range peer.Networks {
				pfx, _ := netip.ParsePrefix(string(n))
				prefixes = append(prefixes, pfx.Masked())
			}
		case peer.Nodes != nil:
			sel, _ := metav1.LabelSelectorAsSelector(peer.Nodes)
			prefixes = append(prefixes, c.nodeAddresses(sel)...)
		}
	}
	blocks := map[string]blockSet{}
	for _, f := range families {
		var ranges []ipRange
		for _, pfx := range prefixes {
			if familyOf(pfx.Addr()) == f {
				ranges = append(ranges, prefixRange(pfx))
			}
		}
		if len(ranges) > 0 {
			ranges = merge(ranges)
			blocks[f.suffix] = blockSet{name: "cnp-nets" + f.suffix + "-" + shortHash(fmt.Sprint(ranges)), ranges: ranges}
		}
	}
	return pods, blocks
}

// nodeAddresses are the internal and external addresses of the nodes sel
// selects, as single-address prefixes.
func (c *compiler) nodeAddresses(sel labels.Selector) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range c.in.Nodes {
		if !sel.Matches(labels.Set(n.Labels)) {
			continue
		}
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				ip = ip.Unmap()
				out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
			}
		}
	}
	return out
}

func checkProtocols(protocols []cnp.ClusterNetworkPolicyProtocol) error {
	for _, pr := range protocols {
		for _, port := range []*cnp.Port{destPort(pr.TCP), destPort(pr.UDP), destPort(pr.SCTP)} {
			if port == nil {
				continue
			}
			if port.Range != nil && (port.Range.Start < 1 || port.Range.End > 65535 || port.Range.Start > port.Range.End) {
				return fmt.Errorf("port range %d-%d", port.Range.Start, port.Range.End)
			}
			if port.Range == nil && (port.Number < 1 || port.Number > 65535) {
				return fmt.Errorf("port %d", port.Number)
			}
		}
	}
	return nil
}

// destPort is a protocol's destination port: nil when the protocol is
// not given or has every port.
func destPort[T cnp.ClusterNetworkPolicyProtocolTCP | cnp.ClusterNetworkPolicyProtocolUDP | cnp.ClusterNetworkPolicyProtocolSCTP](p *T) *cnp.Port {
	if p == nil {
		return nil
	}
	switch v := any(p).(type) {
	case *cnp.ClusterNetworkPolicyProtocolTCP:
		return v.DestinationPort
	case *cnp.ClusterNetworkPolicyProtocolUDP:
		return v.DestinationPort
	case *cnp.ClusterNetworkPolicyProtocolSCTP:
		return v.DestinationPort
	}
	return nil
}

// clusterPorts splits protocols into numeric elements (proto, port or
// range) and named ports (proto, name; a named port's protocol is the
// container port's: TCP, UDP or SCTP, each tried).
func clusterPorts(protocols []cnp.ClusterNetworkPolicyProtocol) (numeric [][]string, named [][2]string) {
	add := func(proto string, port *cnp.Port) {
		switch {
		case port == nil:
			numeric = append(numeric, []string{proto, "0-65535"})
		case port.Range != nil:
			numeric = append(numeric, []string{proto, strconv.Itoa(int(port.Range.Start)) + "-" + strconv.Itoa(int(port.Range.End))})
		default:
			numeric = append(numeric, []string{proto, strconv.Itoa(int(port.Number))})
		}
	}
	for _, pr := range protocols {
		if pr.TCP != nil {
			add("tcp", pr.TCP.DestinationPort)
		}
		if pr.UDP != nil {
			add("udp", pr.UDP.DestinationPort)
		}
		if pr.SCTP != nil {
			add("sctp", pr.SCTP.DestinationPort)
		}
		if pr.DestinationNamedPort != "" {
			for _, proto := range []string{"tcp", "udp", "sctp"} {
				named = append(named, [2]string{proto, pr.DestinationNamedPort})
			}
		}
	}
	return numeric, named
}

// tierGroups writes one chain per distinct ordered list of policies
// selecting a pod, their rules inlined (a Pass must leave the whole tier,
// which a return from a jumped-to policy chain would not), and points
// the pod's address at it.
func (c *compiler) tierGroups(tr *tier, d direction) {
	for ip, names := range tr.selects {
		var rules []Rule
		for _, n := range names {
			rules = append(rules, tr.rules[n]...)
		}
		if len(rules) == 0 {
			continue
		}
		name := tr.name + "-" + d.short + "-" + shortHash(names...)
		g := c.rs.chain(&Chain{Name: name, Comment: d.name + ": the " + tr.name + " cluster policies of a set of pods"})
		if len(g.Rules) == 0 {
			g.Rules = rules
		}
		f := familyOf(ip)
		c.rs.Maps[tr.name+"-"+d.name+f.suffix].Elems[ip.String()] = name
	}
}
