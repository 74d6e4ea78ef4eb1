package netpol

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"

	"weft.dev/weft/internal/nftcomment"
)

// Write puts the whole table into tx, replacing what was there in the
// same transaction, so no packet ever sees a half-written table.
func Write(tx *knftables.Transaction, rs *Ruleset) {
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("weft agent: NetworkPolicy")})
	for _, name := range slices.Sorted(maps.Keys(rs.Sets)) {
		s := rs.Sets[name]
		set := &knftables.Set{Name: name, Type: s.Type, Comment: nftcomment.Bounded(s.Comment)}
		if s.Interval {
			set.Flags = []knftables.SetFlag{knftables.IntervalFlag}
		}
		tx.Add(set)
		for _, e := range s.Elems {
			tx.Add(&knftables.Element{Set: name, Key: e})
		}
	}
	for _, name := range rs.ChainNames() {
		tx.Add(rs.Chains[name].knftables())
	}
	// Maps name chains, so they come after the chains exist.
	for _, name := range slices.Sorted(maps.Keys(rs.Maps)) {
		m := rs.Maps[name]
		tx.Add(&knftables.Map{Name: name, Type: m.Type + " : verdict"})
		for _, k := range slices.Sorted(maps.Keys(m.Elems)) {
			tx.Add(&knftables.Element{Map: name, Key: []string{k}, Value: []string{m.verdict(m.Elems[k])}})
		}
	}
	for _, name := range rs.ChainNames() {
		for _, r := range rs.Chains[name].Rules {
			tx.Add(&knftables.Rule{Chain: name, Rule: r.Text()})
		}
	}
}

// knftables is the chain's declaration; a base chain's with its hook.
func (c *Chain) knftables() *knftables.Chain {
	ch := &knftables.Chain{Name: c.Name, Comment: nftcomment.Bounded(c.Comment)}
	if c.Hook != "" {
		ch.Type = knftables.PtrTo(knftables.FilterType)
		ch.Hook = knftables.PtrTo(knftables.BaseChainHook(c.Hook))
		ch.Priority = knftables.PtrTo(knftables.BaseChainPriority(fmt.Sprintf("filter + %d", c.Priority)))
	}
	return ch
}

// Text is the rule in nft's syntax.
func (r Rule) Text() string {
	switch r.Kind {
	case KindReply:
		return "ct direction reply accept"
	case KindRelated:
		return "ct state related accept"
	case KindEstablished:
		return "ct state established accept"
	case KindDispatch:
		return fmt.Sprintf("%s %s vmap @%s", r.Fam, r.Addr, r.Map)
	case KindLog:
		return fmt.Sprintf("limit rate %d/second burst %d packets log prefix %q group %d", DenyLogRate, DenyLogRate, r.Addr, NFLogGroup)
	case KindDeny:
		return "counter drop"
	case KindKeepDomain:
		return fmt.Sprintf("ct state established ct mark and %#08x == %#08x accept", DomainConnMark, DomainConnMark)
	case KindCached:
		return fmt.Sprintf("ct mark and %#08x == %#08x accept", GenMask, r.Gen)
	case KindRemember:
		return fmt.Sprintf("ct direction original ct mark and %#08x != %#08x ct mark set ct mark and %#08x or %#08x", GenMask, r.Gen, DomainConnMark, r.Gen)
	}
	var parts []string
	if r.Src != "" {
		parts = append(parts, r.Fam+" saddr @"+r.Src)
	}
	if r.Dst != "" {
		parts = append(parts, r.Fam+" daddr @"+r.Dst)
	}
	if r.Ports != "" {
		parts = append(parts, "meta l4proto . th dport @"+r.Ports)
	}
	if r.DstPorts != "" {
		parts = append(parts, r.Fam+" daddr . meta l4proto . th dport @"+r.DstPorts)
	}
	if len(parts) == 0 && r.Fam != "" {
		// An allow-all rule of one family.
		parts = append(parts, "meta nfproto "+map[string]string{"ip": "ipv4", "ip6": "ipv6"}[r.Fam])
	}
	if r.MarkDomain {
		parts = append(parts, fmt.Sprintf("ct mark set ct mark or %#08x", DomainConnMark))
	}
	return strings.Join(append(parts, r.Verdict), " ")
}

// WriteDiff puts into tx what turns the table written from old into the
// table of rs: new sets and chains, changed chains rewritten, elements
// added and removed, what is gone deleted, so a pod or label change costs
// a few elements instead of the whole table. It reports false (and writes
// nothing) when only a full Write can do it.
func WriteDiff(tx *knftables.Transaction, old, rs *Ruleset) bool {
	if old == nil || !sameShape(old, rs) {
		return false
	}
	// 1. New sets with their elements; new elements of kept sets. Sets
	// with intervals are named by their content, so theirs never change.
	for _, name := range slices.Sorted(maps.Keys(rs.Sets)) {
		s, was := rs.Sets[name], old.Sets[name]
		if was == nil {
			set := &knftables.Set{Name: name, Type: s.Type, Comment: nftcomment.Bounded(s.Comment)}
			if s.Interval {
				set.Flags = []knftables.SetFlag{knftables.IntervalFlag}
			}
			tx.Add(set)
		}
		for _, e := range elemsNotIn(s, was) {
			tx.Add(&knftables.Element{Set: name, Key: e})
		}
	}
	// 2. New chains, then every new or changed chain's rules.
	names := rs.ChainNames()
	for _, name := range names {
		if old.Chains[name] == nil {
			tx.Add(rs.Chains[name].knftables())
		}
	}
	for _, name := range names {
		was := old.Chains[name]
		if was != nil && sameRules(was, rs.Chains[name]) {
			continue
		}
		if was != nil {
			tx.Flush(&knftables.Chain{Name: name})
		}
		for _, r := range rs.Chains[name].Rules {
			tx.Add(&knftables.Rule{Chain: name, Rule: r.Text()})
		}
	}
	// 3. Dispatch elements: gone or moved ones out, new or moved ones in.
	for _, name := range slices.Sorted(maps.Keys(rs.Maps)) {
		m, was := rs.Maps[name], old.Maps[name]
		for _, k := range slices.Sorted(maps.Keys(was.Elems)) {
			if v, ok := m.Elems[k]; !ok || v != was.Elems[k] {
				tx.Delete(&knftables.Element{Map: name, Key: []string{k}})
			}
		}
		for _, k := range slices.Sorted(maps.Keys(m.Elems)) {
			if v, ok := was.Elems[k]; !ok || v != m.Elems[k] {
				tx.Add(&knftables.Element{Map: name, Key: []string{k}, Value: []string{m.verdict(m.Elems[k])}})
			}
		}
	}
	// 4. Elements of kept sets that are gone; then chains and sets nothing
	// refers to any more.
	for _, name := range slices.Sorted(maps.Keys(old.Sets)) {
		if s := rs.Sets[name]; s != nil {
			for _, e := range elemsNotIn(old.Sets[name], s) {
				tx.Delete(&knftables.Element{Set: name, Key: e})
			}
		}
	}
	for _, name := range old.ChainNames() {
		if rs.Chains[name] == nil {
			tx.Flush(&knftables.Chain{Name: name})
		}
	}
	for _, name := range old.ChainNames() {
		if rs.Chains[name] == nil {
			tx.Delete(&knftables.Chain{Name: name})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(old.Sets)) {
		if rs.Sets[name] == nil {
			tx.Delete(&knftables.Set{Name: name})
		}
	}
	return true
}

// sameShape: the base chains, maps and every kept set are defined alike,
// so a difference can be written in place.
func sameShape(a, b *Ruleset) bool {
	for _, name := range slices.Sorted(maps.Keys(b.Chains)) {
		if c := b.Chains[name]; c.Hook != "" {
			// A base chain may come or go (dropIdleHooks); one that
			// changed its hook cannot be changed in place.
			o := a.Chains[name]
			if o != nil && (o.Hook != c.Hook || o.Priority != c.Priority) {
				return false
			}
		}
	}
	if len(a.Maps) != len(b.Maps) {
		return false
	}
	for name, m := range b.Maps {
		if o := a.Maps[name]; o == nil || o.Type != m.Type || o.Jump != m.Jump {
			return false
		}
	}
	for name, s := range b.Sets {
		if o := a.Sets[name]; o != nil && (o.Type != s.Type || o.Interval != s.Interval) {
			return false
		}
	}
	return true
}

func sameRules(a, b *Chain) bool {
	if len(a.Rules) != len(b.Rules) {
		return false
	}
	for i := range a.Rules {
		if a.Rules[i] != b.Rules[i] {
			return false
		}
	}
	return true
}

// elemsNotIn lists the elements of s that other lacks (all, if other is nil).
func elemsNotIn(s, other *Set) [][]string {
	have := map[string]bool{}
	if other != nil {
		for _, e := range other.Elems {
			have[strings.Join(e, " . ")] = true
		}
	}
	var out [][]string
	for _, e := range s.Elems {
		if !have[strings.Join(e, " . ")] {
			out = append(out, e)
		}
	}
	return out
}
