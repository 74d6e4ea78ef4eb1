package netpol

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
)

// Ruleset is the compiled weft-policy table as data. The tracer in the
// tests walks it as the kernel would; Write renders it into one nftables
// transaction.
type Ruleset struct {
	Sets   map[string]*Set
	Maps   map[string]*Map
	Chains map[string]*Chain
	// Domains are the sets of domain-name peers: the compiler declares
	// them empty; the DomainLearner fills them from DNS answers.
	Domains map[string]DomainSet
	// Problems: what in the policies could not be compiled. The rule
	// concerned allows nothing, so a broken rule never opens traffic.
	Problems []Problem
}

// Problem is one policy's part that was left out, and why.
type Problem struct {
	Namespace, Name string
	Message         string
}

// Set is a named set; elements are keys of one or more parts (a
// concatenation), each part a value or an interval "a-b".
type Set struct {
	Name     string
	Type     string
	Interval bool
	Comment  string
	Elems    [][]string
}

// Map is a verdict map from an address to the chain to go to (goto), or
// to jump to (Jump: the chain may return, as a tier's does).
type Map struct {
	Name  string
	Type  string
	Jump  bool
	Elems map[string]string
}

// verdict is the map's verdict for a chain.
func (m *Map) verdict(chain string) string {
	if m.Jump {
		return "jump " + chain
	}
	return "goto " + chain
}

// Chain is a chain with its rules; a base chain has a Hook.
type Chain struct {
	Name     string
	Hook     string // "forward" for base chains, "" otherwise
	Priority int
	Comment  string
	Rules    []Rule
}

// RuleKind is one of the few rule forms the compiler emits.
type RuleKind int

const (
	// KindReply: ct direction reply accept.
	KindReply RuleKind = iota
	// KindRelated: ct state related accept (ICMP errors of allowed flows).
	KindRelated
	// KindEstablished: ct state established accept (only with KeepEstablished).
	KindEstablished
	// KindDispatch: <Fam> <Addr> vmap @<Map>.
	KindDispatch
	// KindMatch: the address and port matches that are set, then Verdict.
	KindMatch
	// KindLog: report to the agent's nflog group, at most DenyLogRate a
	// second, prefixed with the direction (Addr); no verdict.
	KindLog
	// KindDeny: count and drop.
	KindDeny
	// KindKeepDomain: ct state established with DomainConnMark accept: a
	// connection a domain-name rule accepted outlives its address's TTL.
	KindKeepDomain
	// KindCached: ct mark's generation is this table's (Gen): the flow was
	// allowed since the table last changed, so its packet is not judged
	// again.
	KindCached
	// KindRemember: a packet both directions let through stamps its flow
	// with the generation (Gen), keeping the domain bit.
	KindRemember
)

// DomainConnMark is the conntrack mark bit a domain-name rule sets on the
// connections it accepts.
const DomainConnMark = 0x00100000

// GenMask is the part of the conntrack mark that holds the generation of
// the table that last allowed the flow: every bit but the domain bit.
const GenMask = ^uint32(DomainConnMark)

// Rule is one rule. For KindMatch every non-empty field must match.
type Rule struct {
	Kind RuleKind
	Fam  string // "ip" or "ip6": the family of Src, Dst, DstPorts and Map
	// Addr is "saddr" or "daddr" (KindDispatch).
	Addr string
	Map  string
	Src  string // set the source address must be in
	Dst  string // set the destination address must be in
	// Ports: a set of protocol . port (interval) the packet must match.
	Ports string
	// DstPorts: a set of destination address . protocol . port.
	DstPorts string
	Verdict  string // accept, jump C, goto C, return
	// MarkDomain sets DomainConnMark on the connection before Verdict.
	MarkDomain bool
	// Gen is the table's generation (KindCached, KindRemember).
	Gen uint32
}

// Names of the fixed parts of the table.
const (
	TableName    = "weft-policy"
	ChainEgress  = "egress"
	ChainIngress = "ingress"
	ChainDenyIn  = "deny-ingress"
	ChainDenyEg  = "deny-egress"
	// ChainRemember stamps allowed flows after both direction chains.
	ChainRemember = "remember"
	// NFLogGroup receives a copy of denied packets.
	NFLogGroup = 2701
	// DenyLogRate bounds the packets per second and direction copied to the
	// agent, so a flood of denied packets costs the agent little.
	DenyLogRate = 100
)

func newRuleset() *Ruleset {
	return &Ruleset{Sets: map[string]*Set{}, Maps: map[string]*Map{}, Chains: map[string]*Chain{}, Domains: map[string]DomainSet{}}
}

func (rs *Ruleset) chain(c *Chain) *Chain {
	if old, ok := rs.Chains[c.Name]; ok {
		return old
	}
	rs.Chains[c.Name] = c
	return c
}

// SetGeneration stamps gen into the rules that read or write the flow's
// generation. gen must be non-zero (a new flow's mark is 0) and leave the
// domain bit clear; NextGeneration gives such values.
func (rs *Ruleset) SetGeneration(gen uint32) {
	if gen == 0 || gen&DomainConnMark != 0 {
		panic(fmt.Sprintf("netpol: generation %#x would pass new flows or clash with the domain bit", gen))
	}
	for _, c := range rs.Chains {
		for i := range c.Rules {
			if k := c.Rules[i].Kind; k == KindCached || k == KindRemember {
				c.Rules[i].Gen = gen
			}
		}
	}
}

// NextGeneration is the generation after gen: never 0, never with the
// domain bit set.
func NextGeneration(gen uint32) uint32 {
	gen++
	if gen&DomainConnMark != 0 {
		gen += DomainConnMark // carries past the domain bit
	}
	if gen == 0 {
		gen = 1
	}
	return gen
}

// ChainNames lists the chains, base chains first, the rest sorted.
func (rs *Ruleset) ChainNames() []string {
	var base, rest []string
	for n, c := range rs.Chains {
		if c.Hook != "" {
			base = append(base, n)
		} else {
			rest = append(rest, n)
		}
	}
	sort.Strings(base)
	sort.Strings(rest)
	return append(base, rest...)
}

// shortHash names an object by what defines it, so the same definition
// keeps its name across syncs and policies share identical sets.
func shortHash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}
