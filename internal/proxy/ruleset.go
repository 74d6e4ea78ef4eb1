package proxy

import (
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/knftables"
)

// Ruleset is the compiled table as data: chains with their rules, sets and
// maps, and elements. It can be written whole (Full) or as the difference
// from the previous ruleset (Diff), so a change to one service touches only
// that service's chains and elements.
type Ruleset struct {
	chains map[string]*knftables.Chain
	order  []string // chains in creation order
	rules  map[string][]*knftables.Rule
	sets   map[string]*knftables.Set
	maps   map[string]*knftables.Map
	// elems are the elements in the order added, one per set/map and
	// key. Most rulesets are one Service's part (ten-odd elements), kept
	// for every Service: a scan finds an element there, and an index is
	// built only once a ruleset outgrows that (a whole table).
	elems []*knftables.Element
	index map[string]int // elementKey → position in elems; nil while small
}

// indexFrom is the size from which a ruleset indexes its elements.
const indexFrom = 32

func newRuleset() *Ruleset {
	return &Ruleset{chains: map[string]*knftables.Chain{}, rules: map[string][]*knftables.Rule{},
		sets: map[string]*knftables.Set{}, maps: map[string]*knftables.Map{}}
}

// Add records an object, with the same call shape as a transaction.
func (m *Ruleset) Add(obj knftables.Object) {
	switch o := obj.(type) {
	case *knftables.Chain:
		if _, ok := m.chains[o.Name]; !ok {
			m.order = append(m.order, o.Name)
		}
		m.chains[o.Name] = o
	case *knftables.Rule:
		m.rules[o.Chain] = append(m.rules[o.Chain], o)
	case *knftables.Set:
		m.sets[o.Name] = o
	case *knftables.Map:
		m.maps[o.Name] = o
	case *knftables.Element:
		if i, ok := m.find(o); ok {
			m.elems[i] = o
			return
		}
		m.elems = append(m.elems, o)
		if m.index != nil {
			m.index[elementKey(o)] = len(m.elems) - 1
		}
	}
}

// find returns the position of the element with e's set or map and key.
func (m *Ruleset) find(e *knftables.Element) (int, bool) {
	if m.index == nil && len(m.elems) >= indexFrom {
		m.index = make(map[string]int, len(m.elems))
		for i, x := range m.elems {
			m.index[elementKey(x)] = i
		}
	}
	if m.index != nil {
		i, ok := m.index[elementKey(e)]
		return i, ok
	}
	for i, x := range m.elems {
		if x.Set == e.Set && x.Map == e.Map && slices.Equal(x.Key, e.Key) {
			return i, true
		}
	}
	return 0, false
}

// lookup returns the element with e's set or map and key.
func (m *Ruleset) lookup(e *knftables.Element) (*knftables.Element, bool) {
	if i, ok := m.find(e); ok {
		return m.elems[i], true
	}
	return nil, false
}

func elementKey(e *knftables.Element) string {
	return e.Set + e.Map + "|" + strings.Join(e.Key, " . ")
}

func elementValue(e *knftables.Element) string { return strings.Join(e.Value, " ") }

func ruleText(rs []*knftables.Rule) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(r.Rule)
		if r.Comment != nil {
			b.WriteString(" #" + *r.Comment)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// Full writes the whole table: flush and rewrite in one transaction, so
// packets see the old or the new table, never a mix.
func (m *Ruleset) Full(tx *knftables.Transaction) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("weft service proxy")})
	tx.Flush(&knftables.Table{})
	for _, name := range sortedKeys(m.maps) {
		tx.Add(m.maps[name])
		// `flush table` empties chains but not maps and sets.
		tx.Flush(&knftables.Map{Name: name})
	}
	for _, name := range sortedKeys(m.sets) {
		tx.Add(m.sets[name])
		if name == "cluster-ips" || name == "hairpin-pairs" {
			tx.Flush(&knftables.Set{Name: name})
		}
	}
	for _, name := range m.order {
		tx.Add(m.chains[name])
	}
	for _, name := range m.order {
		for _, r := range m.rules[name] {
			tx.Add(r)
		}
	}
	for _, e := range m.elems {
		tx.Add(e)
	}
}

// Structure writes the table without elements and without emptying any
// set or map: every chain is flushed and refilled (so rule drift is
// repaired), new sets and maps are created. The elements follow through
// an ElementWriter; objects of the old table that the ruleset no longer has
// are deleted afterwards by the caller.
func (m *Ruleset) Structure(tx *knftables.Transaction) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("weft service proxy")})
	for _, name := range sortedKeys(m.maps) {
		tx.Add(m.maps[name])
	}
	for _, name := range sortedKeys(m.sets) {
		tx.Add(m.sets[name])
	}
	for _, name := range m.order {
		tx.Add(m.chains[name])
		tx.Flush(&knftables.Chain{Name: name})
	}
	for _, name := range m.order {
		for _, r := range m.rules[name] {
			tx.Add(r)
		}
	}
}

// Diff writes what changed from prev to m and returns how many operations
// that took. Stale chains, sets and maps are removed after what referenced
// them.
func (m *Ruleset) Diff(tx *knftables.Transaction, prev *Ruleset) int {
	ops := 0
	for _, name := range sortedKeys(m.sets) {
		if _, ok := prev.sets[name]; !ok {
			tx.Add(m.sets[name])
			ops++
		}
	}
	for _, name := range sortedKeys(m.maps) {
		if _, ok := prev.maps[name]; !ok {
			tx.Add(m.maps[name])
			ops++
		}
	}
	// Elements that go or change first, so no element points at a chain
	// that is about to be deleted.
	for _, old := range prev.elems {
		if now, ok := m.lookup(old); !ok || elementValue(now) != elementValue(old) {
			tx.Delete(&knftables.Element{Set: old.Set, Map: old.Map, Key: old.Key})
			ops++
		}
	}
	for _, name := range m.order {
		if _, ok := prev.chains[name]; !ok {
			tx.Add(m.chains[name])
			ops++
		}
	}
	for _, name := range m.order {
		_, existed := prev.chains[name]
		if existed && ruleText(prev.rules[name]) == ruleText(m.rules[name]) {
			continue
		}
		if existed {
			tx.Flush(&knftables.Chain{Name: name})
			ops++
		}
		for _, r := range m.rules[name] {
			tx.Add(r)
			ops++
		}
	}
	for _, now := range m.elems {
		if old, ok := prev.lookup(now); !ok || elementValue(now) != elementValue(old) {
			tx.Add(now)
			ops++
		}
	}
	var gone []string
	for _, name := range prev.order {
		if _, ok := m.chains[name]; !ok {
			tx.Flush(&knftables.Chain{Name: name})
			gone = append(gone, name)
			ops++
		}
	}
	for _, name := range gone {
		tx.Delete(&knftables.Chain{Name: name})
		ops++
	}
	for _, name := range sortedKeys(prev.sets) {
		if _, ok := m.sets[name]; !ok {
			tx.Delete(&knftables.Set{Name: name})
			ops++
		}
	}
	for _, name := range sortedKeys(prev.maps) {
		if _, ok := m.maps[name]; !ok {
			tx.Delete(&knftables.Map{Name: name})
			ops++
		}
	}
	return ops
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// merge adds o to m; withShared false leaves out the elements of shared
// sets (a partial sync reference-counts those itself).
func (m *Ruleset) merge(o *Ruleset, withShared bool) {
	for _, name := range o.order {
		m.Add(o.chains[name])
	}
	for name, rs := range o.rules {
		m.rules[name] = append(m.rules[name], rs...)
	}
	for name, s := range o.sets {
		m.sets[name] = s
	}
	for name, mp := range o.maps {
		m.maps[name] = mp
	}
	for _, e := range o.elems {
		if withShared || !sharedSets[e.Set] {
			m.Add(e)
		}
	}
}
