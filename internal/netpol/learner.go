package netpol

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"sigs.k8s.io/knftables"
)

// DomainLearner fills the domain-name sets of the policy table from the
// answers of the node-local DNS cache: an address answered for a name that
// a set's patterns match is in that set until the answer's TTL runs out.
// It remembers answers by name, so a set made after a pod's lookup gets
// the addresses still valid. Every write goes through its lock, so a table
// the controller rewrites whole gets the live addresses in the same
// transaction.
type DomainLearner struct {
	nft knftables.Interface
	now func() time.Time
	// MinTTL and MaxTTL bound how long an answer is kept: a TTL of 0 must
	// still let the pod connect; a huge one must not pin an address.
	MinTTL, MaxTTL time.Duration

	active atomic.Bool // any domain set in the table
	mu     sync.Mutex
	sets   map[string]DomainSet                // of the table as last written
	names  map[string]map[netip.Addr]time.Time // name → address → expiry
	kernel map[string]map[netip.Addr]bool      // what each set holds
}

// NewDomainLearner writes to the policy table through nft.
func NewDomainLearner(nft knftables.Interface) *DomainLearner {
	return &DomainLearner{nft: nft, now: time.Now, MinTTL: 5 * time.Second, MaxTTL: time.Hour,
		sets: map[string]DomainSet{}, names: map[string]map[netip.Addr]time.Time{}, kernel: map[string]map[netip.Addr]bool{}}
}

// Run drops expired addresses every second until ctx ends.
func (l *DomainLearner) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.mu.Lock()
			l.expire()
			_ = l.reconcile(ctx)
			l.mu.Unlock()
		}
	}
}

// Observe learns the addresses of a DNS response that a set's patterns
// match and writes them before it returns, so the pod that asked can
// connect as soon as it has the answer.
func (l *DomainLearner) Observe(ctx context.Context, resp *dns.Msg) {
	if !l.active.Load() {
		return // no domain-name rule: DNS pays nothing
	}
	learned := answeredAddresses(resp)
	if len(learned) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	watched := false
	for _, a := range learned {
		if !l.watched(a.name) {
			continue
		}
		watched = true
		ttl := min(max(a.ttl, l.MinTTL), l.MaxTTL)
		if l.names[a.name] == nil {
			l.names[a.name] = map[netip.Addr]time.Time{}
		}
		if exp := now.Add(ttl); exp.After(l.names[a.name][a.addr]) {
			l.names[a.name][a.addr] = exp
		}
	}
	if watched {
		_ = l.reconcile(ctx)
	}
}

func (l *DomainLearner) watched(name string) bool {
	for _, s := range l.sets {
		for _, p := range s.Patterns {
			if matchesPattern(name, p) {
				return true
			}
		}
	}
	return false
}

// expire forgets answers past their TTL.
func (l *DomainLearner) expire() {
	now := l.now()
	for name, addrs := range l.names {
		maps.DeleteFunc(addrs, func(_ netip.Addr, exp time.Time) bool { return !exp.After(now) })
		if len(addrs) == 0 {
			delete(l.names, name)
		}
	}
}

// want is what each set should hold now.
func (l *DomainLearner) want() map[string]map[netip.Addr]bool {
	out := map[string]map[netip.Addr]bool{}
	for set, s := range l.sets {
		out[set] = map[netip.Addr]bool{}
		for name, addrs := range l.names {
			if !slices.ContainsFunc(s.Patterns, func(p string) bool { return matchesPattern(name, p) }) {
				continue
			}
			for a := range addrs {
				if (a.Is4() && s.Family == "ip") || (a.Is6() && s.Family == "ip6") {
					out[set][a] = true
				}
			}
		}
	}
	return out
}

// reconcile writes the difference between what the sets hold and what
// they should.
func (l *DomainLearner) reconcile(ctx context.Context) error {
	want := l.want()
	tx := l.nft.NewTransaction()
	for _, set := range slices.Sorted(maps.Keys(want)) {
		for a := range l.kernel[set] {
			if !want[set][a] {
				tx.Delete(&knftables.Element{Set: set, Key: []string{a.String()}})
			}
		}
		for a := range want[set] {
			if !l.kernel[set][a] {
				tx.Add(&knftables.Element{Set: set, Key: []string{a.String()}})
			}
		}
	}
	if tx.NumOperations() == 0 {
		return nil
	}
	if err := l.nft.Run(ctx, tx); err != nil {
		// What the sets hold is not what was thought: read it back, so
		// the next reconcile writes the true difference.
		l.readBack(ctx, want)
		return err
	}
	l.kernel = want
	return nil
}

func (l *DomainLearner) readBack(ctx context.Context, sets map[string]map[netip.Addr]bool) {
	l.kernel = map[string]map[netip.Addr]bool{}
	for set := range sets {
		elems, err := l.nft.ListElements(ctx, "set", set)
		if err != nil {
			continue
		}
		l.kernel[set] = map[netip.Addr]bool{}
		for _, e := range elems {
			if a, err := netip.ParseAddr(strings.Join(e.Key, "")); err == nil {
				l.kernel[set][a] = true
			}
		}
	}
}

// Apply runs the controller's transaction tx, which writes rs over old
// (nil: the whole table), with the live addresses of every domain set it
// creates, and from then on keeps rs's sets.
func (l *DomainLearner) Apply(ctx context.Context, tx *knftables.Transaction, rs, old *Ruleset) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire()
	sets := rs.Domains
	prev := l.sets
	l.sets = sets
	l.active.Store(len(sets) > 0)
	want := l.want()
	kernel := map[string]map[netip.Addr]bool{}
	for set := range sets {
		if _, kept := prev[set]; kept && old != nil && old.Sets[set] != nil {
			kernel[set] = l.kernel[set] // a diff leaves its elements alone
			continue
		}
		for a := range want[set] {
			tx.Add(&knftables.Element{Set: set, Key: []string{a.String()}})
		}
		kernel[set] = want[set]
	}
	if err := l.nft.Run(ctx, tx); err != nil {
		l.sets = prev
		l.active.Store(len(prev) > 0)
		return err
	}
	l.kernel = kernel
	return l.reconcile(ctx)
}

// learnedAddress is one address a response gives for a name.
type learnedAddress struct {
	name string
	addr netip.Addr
	ttl  time.Duration
}

// answeredAddresses reads a response's A and AAAA records, each under the
// question name and every name of the CNAME chain that led to it, with
// the least TTL along that chain.
func answeredAddresses(resp *dns.Msg) []learnedAddress {
	if resp == nil || !resp.Response || resp.Rcode != dns.RcodeSuccess || len(resp.Question) != 1 {
		return nil
	}
	type link struct {
		from string
		ttl  uint32
	}
	canon := func(n string) string { return strings.TrimSuffix(strings.ToLower(n), ".") }
	// cname target → its owner, to walk back to the question.
	parent := map[string]link{}
	for _, rr := range resp.Answer {
		if c, ok := rr.(*dns.CNAME); ok {
			parent[canon(c.Target)] = link{canon(c.Hdr.Name), c.Hdr.Ttl}
		}
	}
	var out []learnedAddress
	for _, rr := range resp.Answer {
		var ip netip.Addr
		switch r := rr.(type) {
		case *dns.A:
			ip, _ = netip.AddrFromSlice(r.A.To4())
		case *dns.AAAA:
			ip, _ = netip.AddrFromSlice(r.AAAA.To16())
		default:
			continue
		}
		if !ip.IsValid() {
			continue
		}
		name, ttl := canon(rr.Header().Name), rr.Header().Ttl
		for hops := 0; hops < 16; hops++ {
			out = append(out, learnedAddress{name: name, addr: ip.Unmap(), ttl: time.Duration(ttl) * time.Second})
			up, ok := parent[name]
			if !ok {
				break
			}
			name, ttl = up.from, min(ttl, up.ttl)
		}
	}
	return out
}
