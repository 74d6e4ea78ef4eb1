package netpol

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// packet is what the tracer needs of a packet and its conntrack state.
type packet struct {
	src, dst    string
	proto       string // tcp, udp, sctp, icmp
	dport       int
	reply       bool // conntrack: reply direction of a known connection
	related     bool
	established bool
	// gen: the generation stamped on the flow's conntrack mark (0: none).
	gen uint32
}

// verdict is where a packet's walk ended.
type verdict struct {
	accept bool
	denyBy string // the deny chain that dropped it
}

// tracer walks a Ruleset as the kernel walks the table: the forward hook's
// base chains in priority order, each ending in accept (the next base
// chain runs) or drop (the packet is gone). It knows exactly the rule
// kinds the compiler emits.
type tracer struct {
	t  *testing.T
	rs *Ruleset
}

func (tr tracer) trace(p packet) verdict {
	tr.t.Helper()
	for _, base := range []string{ChainEgress, ChainIngress} {
		if tr.rs.Chains[base] == nil {
			continue // no pod of the node in this direction's maps
		}
		res, by := tr.run(base, p, 0)
		if res == "drop" {
			return verdict{denyBy: by}
		}
	}
	return verdict{accept: true}
}

// run returns "accept", "drop" or "" (the chain ended without a verdict).
func (tr tracer) run(name string, p packet, depth int) (string, string) {
	tr.t.Helper()
	c, ok := tr.rs.Chains[name]
	if !ok {
		tr.t.Fatalf("tracer: jump to missing chain %q", name)
	}
	if depth > 16 {
		tr.t.Fatalf("tracer: chain loop at %q", name)
	}
	fam := "ip"
	if netip.MustParseAddr(p.src).Is6() {
		fam = "ip6"
	}
	for _, r := range c.Rules {
		target := ""
		switch r.Kind {
		case KindReply:
			if p.reply {
				return "accept", ""
			}
			continue
		case KindRelated:
			if p.related {
				return "accept", ""
			}
			continue
		case KindEstablished:
			if p.established {
				return "accept", ""
			}
			continue
		case KindCached:
			if p.gen == r.Gen && !p.reply {
				return "accept", ""
			}
			continue
		case KindLog, KindKeepDomain, KindRemember:
			continue
		case KindDeny:
			return "drop", name
		case KindDispatch:
			if r.Fam != fam {
				continue
			}
			addr := p.src
			if r.Addr == "daddr" {
				addr = p.dst
			}
			m, ok := tr.rs.Maps[r.Map]
			if !ok {
				tr.t.Fatalf("tracer: missing map %q", r.Map)
			}
			to, ok := m.Elems[netip.MustParseAddr(addr).String()]
			if !ok {
				continue
			}
			target = m.verdict(to)
		case KindMatch:
			if !tr.matches(r, fam, p) {
				continue
			}
			target = r.Verdict
		}
		switch {
		case target == "accept":
			return "accept", ""
		case target == "return":
			return "", ""
		case strings.HasPrefix(target, "jump "):
			if res, by := tr.run(strings.TrimPrefix(target, "jump "), p, depth+1); res != "" {
				return res, by
			}
		case strings.HasPrefix(target, "goto "):
			return tr.run(strings.TrimPrefix(target, "goto "), p, depth+1)
		default:
			tr.t.Fatalf("tracer: unknown verdict %q in %s", target, name)
		}
	}
	return "", ""
}

func (tr tracer) matches(r Rule, fam string, p packet) bool {
	if r.Fam != "" && r.Fam != fam {
		return false
	}
	port := strconv.Itoa(p.dport)
	hasPort := p.proto == "tcp" || p.proto == "udp" || p.proto == "sctp"
	if r.Src != "" && !tr.inSet(r.Src, p.src) {
		return false
	}
	if r.Dst != "" && !tr.inSet(r.Dst, p.dst) {
		return false
	}
	if r.Ports != "" && (!hasPort || !tr.inSet(r.Ports, p.proto, port)) {
		return false
	}
	if r.DstPorts != "" && (!hasPort || !tr.inSet(r.DstPorts, p.dst, p.proto, port)) {
		return false
	}
	return true
}

func (tr tracer) inSet(name string, key ...string) bool {
	tr.t.Helper()
	s, ok := tr.rs.Sets[name]
	if !ok {
		tr.t.Fatalf("tracer: missing set %q", name)
	}
	parts := strings.Split(s.Type, " . ")
	if len(parts) != len(key) {
		tr.t.Fatalf("tracer: set %q of type %q matched with %d values", name, s.Type, len(key))
	}
	for _, e := range s.Elems {
		if len(e) != len(key) {
			tr.t.Fatalf("tracer: element %v of %q has the wrong arity", e, name)
		}
		all := true
		for i := range key {
			if !partMatches(tr.t, parts[i], e[i], key[i], s.Interval) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

func partMatches(t *testing.T, typ, elem, val string, interval bool) bool {
	t.Helper()
	lo, hi, isRange := strings.Cut(elem, "-")
	if isRange && !interval {
		t.Fatalf("tracer: range %q in a set without the interval flag", elem)
	}
	switch typ {
	case "ipv4_addr", "ipv6_addr":
		v := netip.MustParseAddr(val)
		if strings.Contains(elem, "/") {
			return netip.MustParsePrefix(elem).Contains(v)
		}
		if !isRange {
			return netip.MustParseAddr(elem) == v
		}
		return !v.Less(netip.MustParseAddr(lo)) && !netip.MustParseAddr(hi).Less(v)
	case "inet_service":
		v, _ := strconv.Atoi(val)
		l, _ := strconv.Atoi(lo)
		h := l
		if isRange {
			h, _ = strconv.Atoi(hi)
		}
		return v >= l && v <= h
	case "inet_proto":
		return elem == val
	}
	t.Fatalf("tracer: unknown set part type %q", typ)
	return false
}
