package netpol

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// peers is what a rule's from/to list resolves to.
type peers struct {
	any    bool   // no peers listed: every address
	pods   []*pod // pods selected by the pod and namespace selectors
	byPods bool   // the list has a selector peer (pods may still be empty)
	blocks map[string][]ipRange
	podDef string // what defines the pod set, for its name
}

// rule compiles one ingress or egress rule: every combination of its peer
// matches and port matches becomes one rule ending in accept.
func (c *compiler) rule(p *networkingv1.NetworkPolicy, d direction, idx string, list []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, local []*pod) []Rule {
	pr := c.peersOf(p, d, idx, list)
	numeric, named := portsOf(ports)
	var portSet string
	if len(numeric) > 0 {
		portSet = c.portSet(numeric)
	}
	var out []Rule
	for _, f := range families {
		var matches []string // address sets the peer must be in; "" is any
		if pr.any {
			matches = []string{""}
		}
		if pr.byPods {
			matches = append(matches, c.podSet(f, pr))
		}
		if len(pr.blocks[f.suffix]) > 0 {
			matches = append(matches, c.blockSet(f, pr.blocks[f.suffix]))
		}
		for _, m := range matches {
			r := Rule{Kind: KindMatch, Fam: f.fam, Verdict: "accept"}
			if d == dirIngress {
				r.Src = m
			} else {
				r.Dst = m
			}
			if len(ports) == 0 {
				out = append(out, r)
				continue
			}
			if portSet != "" {
				nr := r
				nr.Ports = portSet
				out = append(out, nr)
			}
			if len(named) > 0 && d == dirIngress {
				nr := r
				nr.DstPorts = c.namedSet(f, "in-"+shortHash(p.Namespace, p.Name, idx), local, named)
				out = append(out, nr)
			}
		}
		// Egress to a named port: the port is the destination pod's, so
		// the set holds destination address . protocol . port of the peers.
		if len(named) > 0 && d == dirEgress && len(matches) > 0 {
			cands := c.candidates(pr)
			out = append(out, Rule{Kind: KindMatch, Fam: f.fam, Verdict: "accept",
				DstPorts: c.namedSet(f, "eg-"+shortHash(p.Namespace, p.Name, idx), cands, named)})
		}
	}
	return out
}

// peersOf resolves a rule's peers; a peer that cannot be read is reported
// and left out, so it allows nothing.
func (c *compiler) peersOf(p *networkingv1.NetworkPolicy, d direction, idx string, list []networkingv1.NetworkPolicyPeer) peers {
	pr := peers{any: len(list) == 0, blocks: map[string][]ipRange{}}
	var defs []string
	for i, peer := range list {
		where := fmt.Sprintf("spec.%s[%s].peers[%d]", d.name, idx, i)
		if peer.IPBlock != nil {
			rs, err := blockOf(peer.IPBlock)
			if err != nil {
				c.problem(p, "%s.ipBlock: %v", where, err)
				continue
			}
			if len(rs) > 0 {
				k := familyOf(rs[0].from).suffix
				pr.blocks[k] = append(pr.blocks[k], rs...)
			}
			continue
		}
		if peer.PodSelector == nil && peer.NamespaceSelector == nil {
			c.problem(p, "%s: empty peer", where)
			continue
		}
		match, err := c.selectorPeer(p.Namespace, peer)
		if err != nil {
			c.problem(p, "%s: %v", where, err)
			continue
		}
		pr.byPods = true
		def, _ := json.Marshal(peer)
		ns := ""
		if peer.NamespaceSelector == nil {
			ns = p.Namespace
		}
		defs = append(defs, ns+string(def))
		pr.pods = append(pr.pods, c.matching("peer\x00"+ns+"\x00"+string(def), match)...)
	}
	for k, rs := range pr.blocks {
		pr.blocks[k] = merge(rs)
	}
	pr.podDef = strings.Join(defs, "|")
	return pr
}

// selectorPeer returns the test a pod must pass to be the peer.
func (c *compiler) selectorPeer(policyNS string, peer networkingv1.NetworkPolicyPeer) (func(*pod) bool, error) {
	podSel, nsSel := labels.Everything(), labels.Selector(nil)
	var err error
	if peer.PodSelector != nil {
		if podSel, err = metav1.LabelSelectorAsSelector(peer.PodSelector); err != nil {
			return nil, fmt.Errorf("podSelector: %w", err)
		}
	}
	if peer.NamespaceSelector != nil {
		if nsSel, err = metav1.LabelSelectorAsSelector(peer.NamespaceSelector); err != nil {
			return nil, fmt.Errorf("namespaceSelector: %w", err)
		}
	}
	return func(q *pod) bool {
		if nsSel == nil {
			if q.namespace != policyNS {
				return false
			}
		} else if !nsSel.Matches(c.namespaceLabels(q.namespace)) {
			return false
		}
		return podSel.Matches(q.labels)
	}, nil
}

func (c *compiler) namespaceLabels(ns string) labels.Set {
	if l, ok := c.nsLabel[ns]; ok {
		return l
	}
	// Not seen yet: the label the API server puts on every namespace.
	return labels.Set{corev1.LabelMetadataName: ns}
}

func blockOf(b *networkingv1.IPBlock) ([]ipRange, error) {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return nil, err
	}
	var except []netip.Prefix
	for _, e := range b.Except {
		x, err := netip.ParsePrefix(e)
		if err != nil {
			return nil, fmt.Errorf("except: %w", err)
		}
		except = append(except, x)
	}
	return blockRanges(cidr, except), nil
}

// candidates are the pods an egress rule with a named port may reach: its
// selected pods and the pods inside its ipBlocks, or all pods.
func (c *compiler) candidates(pr peers) []*pod {
	if pr.any {
		return c.pods
	}
	out := append([]*pod(nil), pr.pods...)
	for _, q := range c.pods {
		for _, ip := range q.ips {
			if inRanges(ip, pr.blocks[familyOf(ip).suffix]) {
				out = append(out, q)
				break
			}
		}
	}
	return out
}

func inRanges(a netip.Addr, rs []ipRange) bool {
	for _, r := range rs {
		if !a.Less(r.from) && !r.to.Less(a) {
			return true
		}
	}
	return false
}

func (c *compiler) podSet(f family, pr peers) string {
	name := "pods" + f.suffix + "-" + shortHash(pr.podDef)
	if _, ok := c.rs.Sets[name]; ok {
		return name
	}
	s := &Set{Name: name, Type: f.addrType, Comment: "pods selected by a rule's peers"}
	seen := map[netip.Addr]bool{}
	for _, q := range pr.pods {
		for _, ip := range q.ips {
			if familyOf(ip) == f && !seen[ip] {
				seen[ip] = true
				s.Elems = append(s.Elems, []string{ip.String()})
			}
		}
	}
	c.rs.Sets[name] = s
	return name
}

func (c *compiler) blockSet(f family, rs []ipRange) string {
	var elems [][]string
	var def []string
	for _, r := range rs {
		elems = append(elems, []string{r.element()})
		def = append(def, r.element())
	}
	name := "cidr" + f.suffix + "-" + shortHash(def...)
	c.rs.Sets[name] = &Set{Name: name, Type: f.addrType, Interval: true, Comment: "ipBlocks of a rule", Elems: elems}
	return name
}

func (c *compiler) portSet(numeric [][]string) string {
	numeric = mergePorts(numeric)
	var def []string
	for _, e := range numeric {
		def = append(def, e[0]+" . "+e[1])
	}
	name := "ports-" + shortHash(def...)
	c.rs.Sets[name] = &Set{Name: name, Type: "inet_proto . inet_service", Interval: true, Comment: "ports of a rule", Elems: numeric}
	return name
}

// namedSet holds address . protocol . port for each pod of pods whose
// containers name a port as the rule does.
func (c *compiler) namedSet(f family, id string, pods []*pod, named [][2]string) string {
	name := "named" + f.suffix + "-" + id
	s := &Set{Name: name, Type: f.addrType + " . inet_proto . inet_service", Comment: "named ports resolved per pod"}
	seen := map[string]bool{}
	for _, q := range pods {
		for _, n := range named {
			port, ok := namedPort(q, n[0], n[1])
			if !ok {
				continue
			}
			for _, ip := range q.ips {
				e := []string{ip.String(), n[0], strconv.Itoa(int(port))}
				if k := strings.Join(e, " . "); familyOf(ip) == f && !seen[k] {
					seen[k] = true
					s.Elems = append(s.Elems, e)
				}
			}
		}
	}
	c.rs.Sets[name] = s
	return name
}

func namedPort(q *pod, proto, name string) (int32, bool) {
	for _, p := range q.ports {
		pp := p.Protocol
		if pp == "" {
			pp = corev1.ProtocolTCP
		}
		if p.Name == name && strings.ToLower(string(pp)) == proto {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

// mergePorts joins overlapping or touching port ranges of a protocol: an
// interval set refuses overlapping elements (a rule listing 80 and 80-90).
func mergePorts(numeric [][]string) [][]string {
	byProto := map[string][][2]int{}
	var protos []string
	for _, e := range numeric {
		lo, hi, _ := strings.Cut(e[1], "-")
		a, _ := strconv.Atoi(lo)
		b := a
		if hi != "" {
			b, _ = strconv.Atoi(hi)
		}
		if _, ok := byProto[e[0]]; !ok {
			protos = append(protos, e[0])
		}
		byProto[e[0]] = append(byProto[e[0]], [2]int{a, b})
	}
	sort.Strings(protos)
	var out [][]string
	for _, p := range protos {
		rs := byProto[p]
		sort.Slice(rs, func(i, j int) bool { return rs[i][0] < rs[j][0] })
		var merged [][2]int
		for _, r := range rs {
			if n := len(merged); n > 0 && r[0] <= merged[n-1][1]+1 {
				merged[n-1][1] = max(merged[n-1][1], r[1])
				continue
			}
			merged = append(merged, r)
		}
		for _, r := range merged {
			v := strconv.Itoa(r[0])
			if r[1] != r[0] {
				v += "-" + strconv.Itoa(r[1])
			}
			out = append(out, []string{p, v})
		}
	}
	return out
}
