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
)

// rule compiles one ingress or egress rule: every combination of its peer
// matches and port matches becomes one rule ending in accept.
func (c *compiler) rule(d direction, r *parsedRule, local []*pod) []Rule {
	pods := c.peerPods(r)
	if r.portSet != nil {
		c.rs.Sets[r.portSet.Name] = r.portSet
	}
	var out []Rule
	for _, f := range families {
		var matches []string // address sets the peer must be in; "" is any
		if r.any {
			matches = []string{""}
		}
		if len(r.sels) > 0 {
			matches = append(matches, c.podSet(f, r.podHash, pods))
		}
		if b, ok := r.blocks[f.suffix]; ok {
			matches = append(matches, c.blockSet(f, b))
		}
		for _, m := range matches {
			x := Rule{Kind: KindMatch, Fam: f.fam, Verdict: "accept"}
			if d == dirIngress {
				x.Src = m
			} else {
				x.Dst = m
			}
			if !r.hasPorts {
				out = append(out, x)
				continue
			}
			if r.portSet != nil {
				nr := x
				nr.Ports = r.portSet.Name
				out = append(out, nr)
			}
			if len(r.named) > 0 && d == dirIngress {
				nr := x
				nr.DstPorts = c.namedSet(f, r.namedID, local, r.named)
				out = append(out, nr)
			}
		}
		// Egress to a named port: the port is the destination pod's, so
		// the set holds destination address . protocol . port of the peers.
		if len(r.named) > 0 && d == dirEgress && len(matches) > 0 {
			out = append(out, Rule{Kind: KindMatch, Fam: f.fam, Verdict: "accept",
				DstPorts: c.namedSet(f, r.namedID, c.candidates(r, pods), r.named)})
		}
	}
	return out
}

// peerPods returns the pods a rule's selector peers select.
func (c *compiler) peerPods(r *parsedRule) []*pod {
	var out []*pod
	for _, s := range r.sels {
		out = append(out, c.matching(s.key, func(q *pod) bool {
			if s.ns == nil {
				if q.namespace != s.namespace {
					return false
				}
			} else if !s.ns.Matches(c.namespaceLabels(q.namespace)) {
				return false
			}
			return s.pod.Matches(q.labels)
		})...)
	}
	return out
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
func (c *compiler) candidates(r *parsedRule, selected []*pod) []*pod {
	if r.any {
		return c.pods
	}
	out := append([]*pod(nil), selected...)
	for _, q := range c.pods {
		for _, ip := range q.ips {
			if b, ok := r.blocks[familyOf(ip).suffix]; ok && inRanges(ip, b.ranges) {
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

func (c *compiler) podSet(f family, hash string, pods []*pod) string {
	name := "pods" + f.suffix + "-" + hash
	if _, ok := c.rs.Sets[name]; ok {
		return name
	}
	s := &Set{Name: name, Type: f.addrType, Comment: "pods selected by a rule's peers"}
	seen := map[netip.Addr]bool{}
	for _, q := range pods {
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

func (c *compiler) blockSet(f family, b blockSet) string {
	if _, ok := c.rs.Sets[b.name]; !ok {
		var elems [][]string
		for _, r := range b.ranges {
			elems = append(elems, []string{r.element()})
		}
		c.rs.Sets[b.name] = &Set{Name: b.name, Type: f.addrType, Interval: true, Comment: "ipBlocks of a rule", Elems: elems}
	}
	return b.name
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
