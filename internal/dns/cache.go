package dns

import (
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Cache keeps responses of forwarded queries for their TTL (negative answers
// for the SOA minimum, RFC 2308), and, when Stale > 0, keeps expired entries
// that long so they can be served when the upstream is down (RFC 8767). Its
// size is bounded in bytes, not entries: a flood of big answers costs no
// more memory than one of small ones.
type Cache struct {
	MaxBytes  int
	MaxTTL    time.Duration // cap on positive answers
	MaxNegTTL time.Duration // cap on NXDOMAIN / no-data answers
	Stale     time.Duration // how long past expiry an entry may still be served
	Now       func() time.Time

	mu      sync.Mutex
	entries map[cacheKey]*cacheEntry
	bytes   int
}

type cacheKey struct {
	name          string
	qtype, qclass uint16
	do            bool
}

type cacheEntry struct {
	msg     *dns.Msg // stored without OPT and with the ID of the first asker
	stored  time.Time
	expires time.Time
	size    int
}

// entryOverhead approximates what an entry costs beside its wire size: the
// map slot, the key, the entry, and per record the parsed structs.
const (
	entryOverhead  = 200
	recordOverhead = 100
)

func entrySize(name string, m *dns.Msg) int {
	return entryOverhead + len(name) + m.Len() + recordOverhead*(len(m.Answer)+len(m.Ns)+len(m.Extra))
}

// NewCache returns a cache of at most maxBytes (approximate memory) with
// sane TTL limits.
func NewCache(maxBytes int, stale time.Duration) *Cache {
	return &Cache{MaxBytes: maxBytes, MaxTTL: time.Hour, MaxNegTTL: 30 * time.Minute, Stale: stale, Now: time.Now,
		entries: map[cacheKey]*cacheEntry{}}
}

func keyOf(q dns.Question, do bool) cacheKey {
	return cacheKey{name: strings.ToLower(q.Name), qtype: q.Qtype, qclass: q.Qclass, do: do}
}

// Get returns a copy of the cached response for q with TTLs lowered by the
// time spent in the cache. fresh is false for a stale entry (TTLs then 30 s,
// the value RFC 8767 recommends).
func (c *Cache) Get(q dns.Question, do bool) (m *dns.Msg, fresh, ok bool) {
	now := c.Now()
	c.mu.Lock()
	e, ok := c.entries[keyOf(q, do)]
	if ok && now.After(e.expires.Add(c.Stale)) {
		delete(c.entries, keyOf(q, do))
		c.bytes -= e.size
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return nil, false, false
	}
	m = e.msg.Copy()
	fresh = !now.After(e.expires)
	age := uint32(now.Sub(e.stored) / time.Second)
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			switch {
			case !fresh:
				h.Ttl = 30
			case h.Ttl > age:
				h.Ttl -= age
			default:
				h.Ttl = 0
			}
		}
	}
	return m, fresh, true
}

// Put stores m as the answer to q if it is cacheable: NOERROR or NXDOMAIN,
// not truncated, with a TTL above zero.
func (c *Cache) Put(q dns.Question, do bool, m *dns.Msg) {
	if m.Truncated || (m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError) {
		return
	}
	ttl, ok := cacheTTL(m)
	if !ok {
		return
	}
	limit := c.MaxTTL
	if m.Rcode == dns.RcodeNameError || len(m.Answer) == 0 {
		limit = c.MaxNegTTL
	}
	if ttl > limit {
		ttl = limit
	}
	if ttl <= 0 {
		return
	}
	stored := m.Copy()
	stored.Extra = withoutOPT(stored.Extra)
	key := keyOf(q, do)
	e := &cacheEntry{msg: stored, size: entrySize(key.name, stored)}
	if e.size > c.MaxBytes/16 {
		return // one answer may not crowd out the rest
	}
	now := c.Now()
	e.stored, e.expires = now, now.Add(ttl)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[cacheKey]*cacheEntry{}
	}
	if old, ok := c.entries[key]; ok {
		c.bytes -= old.size
	}
	if c.bytes+e.size > c.MaxBytes {
		c.evict(now, c.MaxBytes*9/10-e.size)
	}
	c.entries[key] = e
	c.bytes += e.size
}

// evict drops entries past their stale window, then arbitrary ones, until
// at most target bytes remain: cheap, and fair enough for a cache whose
// entries expire on their own. Called with mu held.
func (c *Cache) evict(now time.Time, target int) {
	for k, e := range c.entries {
		if now.After(e.expires.Add(c.Stale)) {
			c.bytes -= e.size
			delete(c.entries, k)
		}
	}
	for k, e := range c.entries {
		if c.bytes <= target {
			return
		}
		c.bytes -= e.size
		delete(c.entries, k)
	}
}

// Bytes is the approximate memory the entries take.
func (c *Cache) Bytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// Len is the number of entries.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// cacheTTL is the smallest TTL of the answer, or for a negative answer the
// SOA's TTL capped by its minimum field.
func cacheTTL(m *dns.Msg) (time.Duration, bool) {
	if len(m.Answer) == 0 {
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				return time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second, true
			}
		}
		return 0, false
	}
	lowest := ^uint32(0)
	for _, rr := range append(append([]dns.RR{}, m.Answer...), m.Ns...) {
		lowest = min(lowest, rr.Header().Ttl)
	}
	return time.Duration(lowest) * time.Second, true
}

func withoutOPT(rrs []dns.RR) []dns.RR {
	out := rrs[:0]
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}
