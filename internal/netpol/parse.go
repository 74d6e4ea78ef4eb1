package netpol

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// parsed is what Compile derives from a policy alone, whatever the pods:
// its selectors parsed, its peers' definitions, its port sets and the
// names they give. A pod changing costs a compile only the matching.
type parsed struct {
	id        string
	target    labels.Selector // nil: the podSelector is invalid
	targetKey string          // memo key of the pods it selects
	problem   string          // why target is nil
	ingress   bool            // the policy isolates its pods' ingress
	egress    bool
	rules     map[string][]parsedRule // by direction name
	chains    map[string]string       // the policy's chain by direction name
	comments  map[string]string       // and its comment
}

// parsedRule is one ingress or egress rule, parsed.
type parsedRule struct {
	any      bool // no peers listed: every address
	sels     []peerSelector
	blocks   map[string]blockSet // by family suffix
	podHash  string              // names the set of the selected pods
	problems []string
	hasPorts bool
	portSet  *Set // numeric ports, merged; nil when none
	named    [][2]string
	namedID  string // names the sets of the named ports
}

// peerSelector is one peer of pod and namespace selectors.
type peerSelector struct {
	key string          // memo key of the pods it selects
	pod labels.Selector // labels.Everything() when absent
	ns  labels.Selector // nil: only the policy's namespace
	// namespace is the policy's namespace, where ns is nil.
	namespace string
}

// blockSet is a family's merged ipBlock ranges and their set's name.
type blockSet struct {
	name   string
	ranges []ipRange
}

// Memo keeps each policy's parsed form from one compile to the next. An
// informer never changes an object it handed out (it hands out a new one),
// so the object's address is its key; forms unused by a compile are
// dropped after it.
type Memo struct {
	mu        sync.Mutex
	cur, prev map[*networkingv1.NetworkPolicy]*parsed
}

func (m *Memo) get(p *networkingv1.NetworkPolicy) *parsed {
	if m == nil {
		return parse(p)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur == nil {
		m.cur = map[*networkingv1.NetworkPolicy]*parsed{}
	}
	if x, ok := m.cur[p]; ok {
		return x
	}
	x, ok := m.prev[p]
	if !ok {
		x = parse(p)
	}
	m.cur[p] = x
	return x
}

// rotate forgets the forms the last compile did not use.
func (m *Memo) rotate() {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.prev, m.cur = m.cur, nil
	m.mu.Unlock()
}

func parse(p *networkingv1.NetworkPolicy) *parsed {
	out := &parsed{id: shortHash(p.Namespace, p.Name), rules: map[string][]parsedRule{},
		chains: map[string]string{}, comments: map[string]string{}}
	for _, d := range []direction{dirIngress, dirEgress} {
		out.chains[d.name] = "np-" + out.id + "-" + d.short
		out.comments[d.name] = d.name + " of " + p.Namespace + "/" + p.Name
	}
	sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
	if err != nil {
		// Without its selector the policy's pods are unknown; nothing to isolate.
		out.problem = fmt.Sprintf("podSelector: %v", err)
		return out
	}
	out.target, out.targetKey = sel, "target\x00"+p.Namespace+"\x00"+sel.String()
	out.ingress, out.egress = affects(p)
	for i, r := range p.Spec.Ingress {
		out.rules[dirIngress.name] = append(out.rules[dirIngress.name], parseRule(p, dirIngress, i, r.From, r.Ports))
	}
	for i, r := range p.Spec.Egress {
		out.rules[dirEgress.name] = append(out.rules[dirEgress.name], parseRule(p, dirEgress, i, r.To, r.Ports))
	}
	return out
}

// parseRule parses a rule's peers and ports; a peer that cannot be read is
// recorded as a problem and left out, so it allows nothing.
func parseRule(p *networkingv1.NetworkPolicy, d direction, i int, list []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) parsedRule {
	idx := strconv.Itoa(i)
	r := parsedRule{any: len(list) == 0, blocks: map[string]blockSet{}, hasPorts: len(ports) > 0}
	ranges := map[string][]ipRange{}
	var defs []string
	for j, peer := range list {
		where := fmt.Sprintf("spec.%s[%s].peers[%d]", d.name, idx, j)
		if peer.IPBlock != nil {
			rs, err := blockOf(peer.IPBlock)
			if err != nil {
				r.problems = append(r.problems, fmt.Sprintf("%s.ipBlock: %v", where, err))
				continue
			}
			if len(rs) > 0 {
				k := familyOf(rs[0].from).suffix
				ranges[k] = append(ranges[k], rs...)
			}
			continue
		}
		if peer.PodSelector == nil && peer.NamespaceSelector == nil {
			r.problems = append(r.problems, where+": empty peer")
			continue
		}
		s, err := parsePeer(p.Namespace, peer)
		if err != nil {
			r.problems = append(r.problems, fmt.Sprintf("%s: %v", where, err))
			continue
		}
		r.sels = append(r.sels, s)
		defs = append(defs, s.key)
	}
	if len(r.sels) > 0 {
		r.podHash = shortHash(defs...)
	}
	for k, rs := range ranges {
		rs = merge(rs)
		var def []string
		for _, x := range rs {
			def = append(def, x.element())
		}
		r.blocks[k] = blockSet{name: "cidr" + k + "-" + shortHash(def...), ranges: rs}
	}
	numeric, named := portsOf(ports)
	if len(numeric) > 0 {
		r.portSet = portSet(numeric)
	}
	if len(named) > 0 {
		r.named, r.namedID = named, d.short+"-"+shortHash(p.Namespace, p.Name, idx)
	}
	return r
}

func parsePeer(policyNS string, peer networkingv1.NetworkPolicyPeer) (peerSelector, error) {
	s := peerSelector{pod: labels.Everything()}
	var err error
	if peer.PodSelector != nil {
		if s.pod, err = metav1.LabelSelectorAsSelector(peer.PodSelector); err != nil {
			return s, fmt.Errorf("podSelector: %w", err)
		}
	}
	ns := ""
	if peer.NamespaceSelector != nil {
		if s.ns, err = metav1.LabelSelectorAsSelector(peer.NamespaceSelector); err != nil {
			return s, fmt.Errorf("namespaceSelector: %w", err)
		}
	} else {
		ns, s.namespace = policyNS, policyNS
	}
	def, _ := json.Marshal(peer)
	s.key = "peer\x00" + ns + "\x00" + string(def)
	return s, nil
}

func portSet(numeric [][]string) *Set {
	numeric = mergePorts(numeric)
	var def []string
	for _, e := range numeric {
		def = append(def, e[0]+" . "+e[1])
	}
	return &Set{Name: "ports-" + shortHash(def...), Type: "inet_proto . inet_service", Interval: true, Comment: "ports of a rule", Elems: numeric}
}
