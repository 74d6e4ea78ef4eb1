// Package netpol compiles NetworkPolicies into the agent's weft-policy
// nftables table (pure: Compile) and writes it (Write). A pod is judged on
// its own node: its egress where it sends, its ingress where it receives,
// both in the forward hook, after the service proxy's DNAT, so Service
// traffic is judged against the backend pod.
package netpol

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
)

// Input is everything the table depends on.
type Input struct {
	Node       string // pods of this node are enforced here
	Policies   []*networkingv1.NetworkPolicy
	Pods       []*corev1.Pod
	Namespaces []*corev1.Namespace
	// Pending: addresses weft-cni gave local pods that their status does
	// not show yet, by namespace/name, so a pod is isolated before its
	// first packet.
	Pending map[string][]netip.Addr
	// KeepEstablished lets established connections pass without being
	// judged again, so a new deny spares flows already open.
	KeepEstablished bool
	// ClusterPolicies are the ClusterNetworkPolicies (both tiers) and
	// Nodes the nodes their node peers select from.
	ClusterPolicies []*cnp.ClusterNetworkPolicy
	Nodes           []*corev1.Node
	// Memo, if set, carries each policy's parsed form to the next compile.
	Memo *Memo
	// Generation, if not 0, lets a flow allowed since the table was
	// written with it skip judgement (see remember). It must change with
	// every write that changes anything else; 0: every packet is judged.
	Generation uint32
}

// direction is ingress or egress.
type direction struct {
	name         string // "ingress" / "egress"
	short        string // "in" / "eg"
	dispatchAddr string // the local pod's address: daddr for ingress
	peerAddr     string // the peer's address: saddr for ingress
	deny         string
}

var (
	dirIngress = direction{"ingress", "in", "daddr", "saddr", ChainDenyIn}
	dirEgress  = direction{"egress", "eg", "saddr", "daddr", ChainDenyEg}
)

// family is IPv4 or IPv6.
type family struct {
	fam      string // nft's match prefix: ip, ip6
	suffix   string // 4, 6
	addrType string
}

var families = []family{{"ip", "4", "ipv4_addr"}, {"ip6", "6", "ipv6_addr"}}

func familyOf(a netip.Addr) family {
	if a.Is4() {
		return families[0]
	}
	return families[1]
}

// pod is what the compiler needs of a pod.
type pod struct {
	namespace, name string
	labels          labels.Set
	ips             []netip.Addr
	local           bool
	hostNetwork     bool
	ports           []corev1.ContainerPort
}

type compiler struct {
	in      Input
	rs      *Ruleset
	pods    []*pod
	nsLabel map[string]labels.Set
	// targets: local pod address → direction → policy chains selecting it.
	targets map[netip.Addr]map[string][]string
	// selected memoizes selector matches: many policies share selectors.
	selected map[string][]*pod
}

// Compile turns the policies into the table for in.Node.
func Compile(in Input) *Ruleset {
	c := &compiler{in: in, rs: newRuleset(), nsLabel: map[string]labels.Set{}, targets: map[netip.Addr]map[string][]string{},
		selected: map[string][]*pod{}}
	for _, ns := range in.Namespaces {
		c.nsLabel[ns.Name] = ns.Labels
	}
	c.pods = c.podsOf(in)
	c.base()
	c.clusterTiers()
	pols := append([]*networkingv1.NetworkPolicy(nil), in.Policies...)
	sort.Slice(pols, func(i, j int) bool {
		if pols[i].Namespace != pols[j].Namespace {
			return pols[i].Namespace < pols[j].Namespace
		}
		return pols[i].Name < pols[j].Name
	})
	for _, p := range pols {
		c.policy(p)
	}
	c.groups()
	c.dropIdleHooks()
	in.Memo.rotate()
	c.rs.Problems = uniqueProblems(c.rs.Problems)
	return c.rs
}

// podsOf keeps pods that hold addresses: running or starting ones.
func (c *compiler) podsOf(in Input) []*pod {
	// An address weft-cni just gave a pod is that pod's, whatever an older
	// pod's status still says (its deletion may not have reached us yet).
	claimed := map[netip.Addr]string{}
	for key, ips := range in.Pending {
		for _, a := range ips {
			claimed[a.Unmap()] = key
		}
	}
	var out []*pod
	for _, p := range in.Pods {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		pending := in.Pending[p.Namespace+"/"+p.Name]
		// A pod weft-cni reported is this node's even while the informer
		// still holds it from before its binding.
		q := &pod{namespace: p.Namespace, name: p.Name, labels: p.Labels,
			local: p.Spec.NodeName == in.Node || len(pending) > 0, hostNetwork: p.Spec.HostNetwork}
		seen := map[netip.Addr]bool{}
		add := func(a netip.Addr) {
			if a.IsValid() && !seen[a.Unmap()] {
				seen[a.Unmap()] = true
				q.ips = append(q.ips, a.Unmap())
			}
		}
		for _, ip := range p.Status.PodIPs {
			a, _ := netip.ParseAddr(ip.IP)
			if owner, ok := claimed[a.Unmap()]; !ok || owner == p.Namespace+"/"+p.Name {
				add(a)
			}
		}
		for _, a := range pending {
			add(a)
		}
		for _, ctr := range p.Spec.Containers {
			q.ports = append(q.ports, ctr.Ports...)
		}
		if len(q.ips) > 0 {
			out = append(out, q)
		}
	}
	return out
}

// base writes the hook chains, the dispatch maps and the deny chains.
func (c *compiler) base() {
	for i, d := range []direction{dirEgress, dirIngress} {
		ch := c.rs.chain(&Chain{Name: d.name, Hook: "forward", Priority: i,
			Comment: "judges the " + d.name + " of this node's pods"})
		ch.Rules = append(ch.Rules, Rule{Kind: KindReply}, Rule{Kind: KindRelated})
		if c.in.KeepEstablished {
			ch.Rules = append(ch.Rules, Rule{Kind: KindEstablished})
		} else if c.in.Generation != 0 {
			ch.Rules = append(ch.Rules, Rule{Kind: KindCached, Gen: c.in.Generation})
		}
		// The tiers' maps and dispatch rules exist only while a policy of
		// the tier does: a packet pays no lookup for a tier not in use.
		dispatch := func(m string, jump bool) {
			for _, f := range families {
				c.rs.Maps[m+f.suffix] = &Map{Name: m + f.suffix, Type: f.addrType, Jump: jump, Elems: map[string]string{}}
				ch.Rules = append(ch.Rules, Rule{Kind: KindDispatch, Fam: f.fam, Addr: d.dispatchAddr, Map: m + f.suffix})
			}
		}
		if c.hasTier(cnp.AdminTier) {
			dispatch("admin-"+d.name, true)
		}
		dispatch(d.name, false)
		if c.hasTier(cnp.BaselineTier) {
			dispatch("baseline-"+d.name, true)
		}
		c.rs.chain(&Chain{Name: d.deny, Comment: "no policy allows it", Rules: []Rule{{Kind: KindLog, Addr: d.name}, {Kind: KindDeny}}})
	}
}

// dropIdleHooks removes a direction's base chain while no pod of this
// node is in any of its maps: pod traffic no policy judges then passes
// the forward hook without a chain of this table (measured: the two
// chains' rules cost 2-3 % of pod-to-pod throughput). The next pod a
// policy selects brings the chain back, in the same transaction as its
// map element.
func (c *compiler) dropIdleHooks() {
	for _, d := range []direction{dirEgress, dirIngress} {
		ch := c.rs.Chains[d.name]
		if ch == nil {
			continue
		}
		idle := true
		for _, r := range ch.Rules {
			if r.Kind == KindDispatch && len(c.rs.Maps[r.Map].Elems) > 0 {
				idle = false
			}
		}
		if idle {
			delete(c.rs.Chains, d.name)
		}
	}
	c.remember()
}

// remember adds, while a direction chain exists, the chain that stamps a
// flow both let through with the table's generation: its later packets
// pass the direction chains on one mark comparison (KindCached) until the
// table changes, when each flow's next packet is judged again. So a new
// deny still cuts open connections, as without the stamp. With
// KeepEstablished established flows pass anyway and nothing is stamped.
func (c *compiler) remember() {
	if c.in.KeepEstablished || c.in.Generation == 0 || (c.rs.Chains[ChainEgress] == nil && c.rs.Chains[ChainIngress] == nil) {
		return
	}
	c.rs.chain(&Chain{Name: ChainRemember, Hook: "forward", Priority: 2,
		Comment: "stamps flows both directions allowed with the table's generation",
		Rules:   []Rule{{Kind: KindRemember, Gen: c.in.Generation}}})
}

// hasTier reports whether a ClusterNetworkPolicy of tier t exists.
func (c *compiler) hasTier(t cnp.Tier) bool {
	for _, p := range c.in.ClusterPolicies {
		if p.Spec.Tier == t {
			return true
		}
	}
	return false
}

// uniqueProblems drops repeats (a cluster policy is compiled once per
// direction), keeping the first's place.
func uniqueProblems(ps []Problem) []Problem {
	seen := map[Problem]bool{}
	out := ps[:0]
	for _, p := range ps {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

func (c *compiler) problem(p *networkingv1.NetworkPolicy, format string, args ...any) {
	c.rs.Problems = append(c.rs.Problems, Problem{Namespace: p.Namespace, Name: p.Name, Message: fmt.Sprintf(format, args...)})
}

// affects says which directions a policy isolates its pods in.
func affects(p *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(p.Spec.PolicyTypes) == 0 {
		return true, len(p.Spec.Egress) > 0
	}
	for _, t := range p.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}

// policy compiles one policy if it selects a pod of this node.
func (c *compiler) policy(p *networkingv1.NetworkPolicy) {
	pp := c.in.Memo.get(p)
	if pp.target == nil {
		c.problem(p, "%s", pp.problem)
		return
	}
	local := c.matching(pp.targetKey, func(q *pod) bool {
		return q.local && !q.hostNetwork && q.namespace == p.Namespace && pp.target.Matches(q.labels)
	})
	if len(local) == 0 {
		return
	}
	if pp.ingress {
		c.direction(p, pp, dirIngress, local)
	}
	if pp.egress {
		c.direction(p, pp, dirEgress, local)
	}
}

// matching returns the pods that pass match, remembered under key.
func (c *compiler) matching(key string, match func(*pod) bool) []*pod {
	if out, ok := c.selected[key]; ok {
		return out
	}
	out := []*pod{}
	for _, q := range c.pods {
		if match(q) {
			out = append(out, q)
		}
	}
	c.selected[key] = out
	return out
}

// direction writes the policy's chain for one direction and records the
// pods it isolates.
func (c *compiler) direction(p *networkingv1.NetworkPolicy, pp *parsed, d direction, local []*pod) {
	name := pp.chains[d.name]
	ch := c.rs.chain(&Chain{Name: name, Comment: pp.comments[d.name]})
	for i := range pp.rules[d.name] {
		r := &pp.rules[d.name][i]
		for _, msg := range r.problems {
			c.problem(p, "%s", msg)
		}
		ch.Rules = append(ch.Rules, c.rule(d, r, local)...)
	}
	for _, q := range local {
		for _, ip := range q.ips {
			if c.targets[ip] == nil {
				c.targets[ip] = map[string][]string{}
			}
			c.targets[ip][d.name] = append(c.targets[ip][d.name], name)
		}
	}
}

// groups writes one chain per distinct list of policies selecting a pod
// in a direction, and points the pod's address at it: a pod's packet
// walks only the policies that select it, whatever their number.
func (c *compiler) groups() {
	for ip, byDir := range c.targets {
		f := familyOf(ip)
		for _, d := range []direction{dirIngress, dirEgress} {
			chains := byDir[d.name]
			if len(chains) == 0 {
				continue
			}
			sort.Strings(chains)
			name := "grp-" + d.short + "-" + shortHash(chains...)
			g := c.rs.chain(&Chain{Name: name, Comment: d.name + ": the policies of a set of pods"})
			if len(g.Rules) == 0 {
				for _, ch := range chains {
					g.Rules = append(g.Rules, Rule{Kind: KindMatch, Verdict: "jump " + ch})
				}
				g.Rules = append(g.Rules, Rule{Kind: KindMatch, Verdict: "goto " + d.deny})
			}
			c.rs.Maps[d.name+f.suffix].Elems[ip.String()] = name
		}
	}
}

func protoName(p *corev1.Protocol) string {
	if p == nil {
		return "tcp"
	}
	return strings.ToLower(string(*p))
}

// portsOf splits a rule's ports into numeric elements (proto . port or
// range) and named ones (proto, name).
func portsOf(ports []networkingv1.NetworkPolicyPort) (numeric [][]string, named [][2]string) {
	for _, p := range ports {
		proto := protoName(p.Protocol)
		switch {
		case p.Port == nil:
			numeric = append(numeric, []string{proto, "0-65535"})
		case p.Port.Type == 1: // a name
			named = append(named, [2]string{proto, p.Port.StrVal})
		case p.EndPort != nil && *p.EndPort > p.Port.IntVal:
			numeric = append(numeric, []string{proto, fmt.Sprintf("%d-%d", p.Port.IntVal, *p.EndPort)})
		default:
			numeric = append(numeric, []string{proto, strconv.Itoa(int(p.Port.IntVal))})
		}
	}
	return numeric, named
}
