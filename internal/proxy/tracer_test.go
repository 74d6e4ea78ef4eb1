package proxy

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

// tracer runs a packet through a compiled Model the way the kernel would
// walk the table: an interpreter for exactly the rule forms the compiler
// emits (an unknown form fails the test, so the tracer cannot silently
// drift from the compiler). It answers what the unit tests care about:
// verdict, DNAT target and whether the packet is masqueraded.
type tracer struct {
	t      *testing.T
	m      *Ruleset
	local  map[string]bool            // the node's own addresses
	sets   map[string]map[string]bool // contents of dynamic sets (affinity)
	bucket int                        // numgen random picks bucket % n
}

type packet struct {
	src, dst string
	proto    string
	dport    int
}

type traceResult struct {
	verdict string // accept, drop, reject
	dnat    string // ip:port after DNAT, "" if none
	masq    bool
	updated []string // dynamic sets the packet was added to
}

type pktState struct {
	packet
	origDst  string
	dnatted  bool
	mark     uint32
	verdict  string
	masq     bool
	updated  []string
	stopped  bool // a terminal verdict was reached
	returned bool
	// invalid: conntrack's state for the packet is invalid (e.g. out of
	// the TCP window); otherwise it is new.
	invalid bool
}

func newTracer(t *testing.T, m *Ruleset, local ...string) *tracer {
	tr := &tracer{t: t, m: m, local: map[string]bool{"127.0.0.1": true}, sets: map[string]map[string]bool{}}
	for _, l := range local {
		tr.local[l] = true
	}
	return tr
}

// trace sends p through nat (prerouting, or output when fromNode), the
// filter hooks, and nat postrouting.
func (tr *tracer) trace(p packet, fromNode bool) traceResult {
	return tr.traceState(&pktState{packet: p, origDst: p.dst, verdict: "accept"}, fromNode)
}

// traceInvalid traces a packet conntrack holds invalid (no NAT applies to
// it): only the filter hooks see it.
func (tr *tracer) traceInvalid(p packet, fromNode bool) traceResult {
	return tr.traceState(&pktState{packet: p, origDst: p.dst, verdict: "accept", invalid: true}, fromNode)
}

func (tr *tracer) traceState(st *pktState, fromNode bool) traceResult {
	natHook := "nat-prerouting"
	if fromNode {
		natHook = "nat-output"
	}
	// NAT chains see only the first packet of a connection: an invalid
	// packet belongs to none.
	if !st.invalid {
		tr.runChain(st, natHook)
	}
	if !st.stopped || st.verdict == "accept" {
		st.stopped, st.verdict = false, "accept"
		filter := "filter-forward"
		switch {
		case fromNode:
			filter = "filter-output"
		case tr.local[st.dst]:
			filter = "filter-input"
		}
		tr.runChain(st, filter)
	}
	res := traceResult{verdict: st.verdict, updated: st.updated}
	if st.dnatted {
		res.dnat = net.JoinHostPort(st.dst, strconv.Itoa(st.dport))
	}
	if st.verdict == "accept" && !st.invalid {
		st.stopped = false
		tr.runChain(st, "nat-postrouting")
		res.masq = st.masq
	}
	return res
}

func (tr *tracer) runChain(st *pktState, chain string) {
	if _, ok := tr.m.chains[chain]; !ok {
		tr.t.Fatalf("tracer: jump to missing chain %q", chain)
	}
	for _, r := range tr.m.rules[chain] {
		tr.runRule(st, r.Rule)
		if st.stopped {
			return
		}
		if st.returned {
			st.returned = false
			return
		}
	}
}

func (tr *tracer) setHas(name, key string) bool {
	if s, ok := tr.sets[name]; ok {
		return s[key]
	}
	_, ok := tr.m.elementByKey(name + "|" + key)
	return ok
}

func (tr *tracer) mapGet(name, key string) (string, bool) {
	e, ok := tr.m.elementByKey(name + "|" + key)
	if !ok {
		return "", false
	}
	return strings.Join(e.Value, " . "), true
}

func inCIDRs(ip string, list string) bool {
	for _, c := range strings.Split(list, ",") {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			if c == ip {
				return true
			}
			continue
		}
		if n.Contains(net.ParseIP(ip)) {
			return true
		}
	}
	return false
}

// runRule evaluates one rule: matches left to right, then the statement.
func (tr *tracer) runRule(st *pktState, rule string) {
	tok := strings.Fields(rule)
	// In an inet table, an ip (IPv4) or ip6 expression carries an
	// implicit family check: the rule does not apply to a packet of the
	// other family. Past that check both spell the same here.
	family := "ip"
	if strings.Contains(st.dst, ":") {
		family = "ip6"
	}
	for k, t := range tok {
		if t == "ip" || t == "ip6" {
			if t != family {
				return
			}
			tok[k] = "ip"
		}
	}
	i := 0
	next := func(n int) []string { s := tok[i : i+n]; i += n; return s }
	has := func(seq ...string) bool {
		if i+len(seq) > len(tok) {
			return false
		}
		for k, s := range seq {
			if s != "*" && tok[i+k] != s {
				return false
			}
		}
		return true
	}
	// braced reads "{ a , b }" into "a , b".
	braced := func() string {
		if tok[i] != "{" {
			return next(1)[0]
		}
		j := i
		for tok[j] != "}" {
			j++
		}
		s := strings.Join(tok[i+1:j], " ")
		i = j + 1
		return s
	}
	for i < len(tok) {
		switch {
		// Matches.
		case has("ct", "state", "vmap"):
			next(3)
			state := "new"
			if st.invalid {
				state = "invalid"
			}
			for _, e := range strings.Split(braced(), ",") {
				if k, v, _ := strings.Cut(e, ":"); strings.TrimSpace(k) == state {
					tr.verdict(st, strings.TrimSpace(v))
				}
			}
			return
		case has("ct", "state", "new"):
			next(3)
			if st.invalid {
				return
			}
		case has("ct", "state", "invalid"):
			next(3)
			if !st.invalid {
				return
			}
		case has("ct", "status", "dnat"):
			next(3)
			if !st.dnatted {
				return
			}
		case has("ct", "original", "ip", "daddr"):
			next(4)
			set := strings.TrimPrefix(next(1)[0], "@")
			if !tr.setHas(set, st.origDst) {
				return
			}
		case has("fib", "daddr", "type", "local"):
			next(4)
			if !tr.local[st.dst] {
				return
			}
		case has("fib", "saddr", "type", "local"):
			next(4)
			if !tr.local[st.src] {
				return
			}
		case has("fib", "saddr", "type", "!=", "local"):
			next(5)
			if tr.local[st.src] {
				return
			}
		case has("ip", "saddr", ".", "ip", "daddr"):
			next(5)
			set := strings.TrimPrefix(next(1)[0], "@")
			if !tr.setHas(set, st.src+" . "+st.dst) {
				return
			}
		case has("ip", "daddr", ".", "meta", "l4proto", ".", "th", "dport", "vmap"):
			next(9)
			v, ok := tr.mapGet(strings.TrimPrefix(next(1)[0], "@"), fmt.Sprintf("%s . %s . %d", st.dst, st.proto, st.dport))
			if ok {
				tr.verdict(st, v)
			}
			return
		case has("meta", "l4proto", ".", "th", "dport", "vmap"):
			next(6)
			v, ok := tr.mapGet(strings.TrimPrefix(next(1)[0], "@"), fmt.Sprintf("%s . %d", st.proto, st.dport))
			if ok {
				tr.verdict(st, v)
			}
			return
		case has("ip", "saddr") || has("ip", "daddr"):
			field := next(2)[1]
			addr := st.src
			if field == "daddr" {
				addr = st.dst
			}
			neg := false
			if tok[i] == "!=" {
				neg = true
				next(1)
			}
			var match bool
			if strings.HasPrefix(tok[i], "@") {
				match = tr.setHas(strings.TrimPrefix(next(1)[0], "@"), addr)
			} else {
				match = inCIDRs(addr, strings.ReplaceAll(braced(), " , ", ","))
			}
			if match == neg {
				return
			}
		case has("meta", "l4proto") && !has("meta", "l4proto", "."):
			next(2)
			if next(1)[0] != st.proto {
				return
			}
		case has("mark", "and"):
			next(2)
			mask, _ := strconv.ParseUint(next(1)[0], 0, 32)
			op, val := next(1)[0], next(1)[0]
			want, _ := strconv.ParseUint(val, 0, 32)
			if op != "==" || uint64(st.mark)&mask != want {
				return
			}
		// Statements.
		case has("mark", "set", "mark", "or"):
			next(4)
			v, _ := strconv.ParseUint(next(1)[0], 0, 32)
			st.mark |= uint32(v)
		case has("mark", "set", "mark", "xor"):
			next(4)
			v, _ := strconv.ParseUint(next(1)[0], 0, 32)
			st.mark ^= uint32(v)
		case has("update"):
			next(1)
			set := strings.TrimPrefix(next(1)[0], "@")
			_ = braced() // { ip saddr }
			if tr.sets[set] == nil {
				tr.sets[set] = map[string]bool{}
			}
			tr.sets[set][st.src] = true
			st.updated = append(st.updated, set)
		case has("numgen", "random", "mod"):
			next(3)
			n, _ := strconv.Atoi(next(1)[0])
			if next(1)[0] != "vmap" {
				tr.t.Fatalf("tracer: unknown numgen form in %q", rule)
			}
			pick := strconv.Itoa(tr.bucket % n)
			for _, entry := range strings.Split(braced(), " , ") {
				kv := strings.SplitN(entry, " : ", 2)
				if kv[0] == pick {
					tr.verdict(st, kv[1])
					return
				}
			}
			tr.t.Fatalf("tracer: bucket %s missing in %q", pick, rule)
		case has("dnat", "ip", "to"):
			next(3)
			hp := next(1)[0]
			host, port, _ := net.SplitHostPort(hp)
			tr.dnat(st, host, port)
			return
		case has("dnat", "ip", "addr", ".", "port", "to"):
			next(6)
			tr.dnatMap(st, rule, tok[i:])
			return
		case has("masquerade"):
			st.masq, st.stopped, st.verdict = true, true, "accept"
			return
		case has("jump"):
			tr.runChain(st, next(2)[1])
		case has("goto"):
			tr.runChain(st, next(2)[1])
			if !st.stopped {
				st.returned = true
			}
			return
		case has("return"):
			st.returned = true
			return
		case has("reject", "with", "tcp", "reset"):
			next(4)
			st.verdict, st.stopped = "reject", true
			return
		case has("drop"), has("reject"), has("accept"):
			st.verdict, st.stopped = next(1)[0], true
			return
		default:
			tr.t.Fatalf("tracer: unknown rule form at %q in %q", strings.Join(tok[i:], " "), rule)
		}
	}
}

func (tr *tracer) verdict(st *pktState, v string) {
	f := strings.Fields(v)
	switch f[0] {
	case "goto":
		tr.runChain(st, f[1])
		if !st.stopped {
			st.returned = true
		}
	case "jump":
		tr.runChain(st, f[1])
	default:
		st.verdict, st.stopped = f[0], true
	}
}

func (tr *tracer) dnat(st *pktState, host, port string) {
	st.dst = host
	st.dport, _ = strconv.Atoi(port)
	st.dnatted, st.stopped, st.verdict = true, true, "accept"
}

// dnatMap handles "<key> map @M" (the key built from the packet) and
// "numgen random mod N map { i : ip . port , ... }".
func (tr *tracer) dnatMap(st *pktState, rule string, rest []string) {
	s := strings.Join(rest, " ")
	var target string
	if idx := strings.Index(s, "numgen random mod "); idx >= 0 {
		f := strings.Fields(s[idx+len("numgen random mod "):])
		n, _ := strconv.Atoi(f[0])
		pick := strconv.Itoa(tr.bucket % n)
		body := s[strings.Index(s, "{")+1 : strings.LastIndex(s, "}")]
		for _, entry := range strings.Split(body, " , ") {
			kv := strings.SplitN(strings.TrimSpace(entry), " : ", 2)
			if kv[0] == pick {
				target = kv[1]
			}
		}
	} else {
		idx := strings.Index(s, " map @")
		if idx < 0 {
			tr.t.Fatalf("tracer: unknown dnat map form %q", rule)
		}
		var key []string
		for _, part := range strings.Split(s[:idx], " . ") {
			switch strings.TrimSpace(part) {
			case "ip daddr":
				key = append(key, st.dst)
			case "meta l4proto":
				key = append(key, st.proto)
			case "th dport":
				key = append(key, strconv.Itoa(st.dport))
			default:
				tr.t.Fatalf("tracer: unknown key part %q in %q", part, rule)
			}
		}
		v, ok := tr.mapGet(strings.TrimSpace(s[idx+len(" map @"):]), strings.Join(key, " . "))
		if !ok {
			// A lookup that misses ends the rule without a match: the
			// kernel goes on with the next rule
			// (TestPrivilegedTracerMapMissMatchesKernel).
			return
		}
		target = v
	}
	hp := strings.Split(target, " . ")
	tr.dnat(st, hp[0], hp[1])
}

// targets traces p once per bucket and returns the distinct DNAT targets.
func (tr *tracer) targets(p packet, fromNode bool, buckets int) map[string]bool {
	out := map[string]bool{}
	for b := 0; b < buckets; b++ {
		tr.bucket = b
		if r := tr.trace(p, fromNode); r.dnat != "" {
			out[r.dnat] = true
		}
	}
	tr.bucket = 0
	return out
}

// elementByKey finds an element by elementKey (tests only: a scan).
func (m *Ruleset) elementByKey(k string) (*knftables.Element, bool) {
	for _, e := range m.elems {
		if elementKey(e) == k {
			return e, true
		}
	}
	return nil, false
}
