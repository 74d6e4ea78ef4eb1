package netpol

import (
	"fmt"
	"sort"
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
	for _, name := range sortedKeys(rs.Sets) {
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
		c := rs.Chains[name]
		ch := &knftables.Chain{Name: name, Comment: nftcomment.Bounded(c.Comment)}
		if c.Hook != "" {
			ch.Type = knftables.PtrTo(knftables.FilterType)
			ch.Hook = knftables.PtrTo(knftables.BaseChainHook(c.Hook))
			ch.Priority = knftables.PtrTo(knftables.BaseChainPriority(fmt.Sprintf("filter + %d", c.Priority)))
		}
		tx.Add(ch)
	}
	// Maps name chains, so they come after the chains exist.
	for _, name := range sortedKeys(rs.Maps) {
		m := rs.Maps[name]
		tx.Add(&knftables.Map{Name: name, Type: m.Type + " : verdict"})
		for _, k := range sortedKeys(m.Elems) {
			tx.Add(&knftables.Element{Map: name, Key: []string{k}, Value: []string{"goto " + m.Elems[k]}})
		}
	}
	for _, name := range rs.ChainNames() {
		for _, r := range rs.Chains[name].Rules {
			tx.Add(&knftables.Rule{Chain: name, Rule: r.Text()})
		}
	}
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
	return strings.Join(append(parts, r.Verdict), " ")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
