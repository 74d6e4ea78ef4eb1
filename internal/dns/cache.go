package dns

import (
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Cache keeps responses of forwarded queries for their TTL (negative answers
// for the SOA minimum, RFC 2308), and, when Stale > 0, keeps expired entries
// that long so they can be served when the upstream is down (RFC 8767).
type Cache struct {
	MaxEntries int
	MaxTTL     time.Duration // cap on positive answers
	MaxNegTTL  time.Duration // cap on NXDOMAIN / no-data answers
	Stale      time.Duration // how long past expiry an entry may still be served
	Now        func() time.Time

	mu      sync.Mutex
	entries map[cacheKey]*cacheEntry
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
}

// NewCache returns a cache with sane limits.
func NewCache(maxEntries int, stale time.Duration) *Cache {
	return &Cache{MaxEntries: maxEntries, MaxTTL: time.Hour, MaxNegTTL: 30 * time.Minute, Stale: stale, Now: time.Now,
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
	now := c.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[cacheKey]*cacheEntry{}
	}
	if len(c.entries) >= c.MaxEntries {
		// Evict an arbitrary tenth: cheap, and fair enough for a cache
		// whose entries expire on their own.
		n := c.MaxEntries/10 + 1
		for k := range c.entries {
			delete(c.entries, k)
			if n--; n == 0 {
				break
			}
		}
	}
	c.entries[keyOf(q, do)] = &cacheEntry{msg: stored, stored: now, expires: now.Add(ttl)}
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
