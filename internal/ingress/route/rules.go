package route

import (
	"crypto/tls"
	"crypto/x509"
	"math/rand/v2"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Rule is one match of a Gateway API route rule on a path: the request's
// method, headers and query it further needs, and what it does. Several
// rules, of one route or of many, can share a path; they are kept in the
// Gateway API's precedence order and the first whose conditions hold
// serves. A request no rule of a path takes goes on to shorter paths.
type Rule struct {
	Method string // "" for any
	// PathRegex, when set, must match the whole path (a GRPCRoute's
	// method match by regular expression, or by method alone).
	PathRegex *regexp.Regexp
	// H2C: the backends speak HTTP/2 without TLS (a GRPCRoute's).
	H2C     bool
	Headers []ValueMatch
	Query   []ValueMatch
	// Backends share the rule's requests by weight.
	Backends []WeightedBackend
	Filters  Filters
	// Source is the route ("HTTPRoute namespace/name").
	Source string
	Rank   Rank
}

// Rank orders rules whose path matches alike: after method, header and
// query conditions, the older route, then by name, then rule and match
// index.
type Rank struct {
	Created time.Time
	Name    string // namespace/name
	Index   int    // rule index × 1024 + match index
}

// ValueMatch is a header (name case-insensitive) or query parameter
// (name exact) that must equal Value, or match Regex when it is set.
type ValueMatch struct {
	Name, Value string
	Regex       *regexp.Regexp
}

func (m ValueMatch) holds(v string, ok bool) bool {
	if !ok {
		return false
	}
	if m.Regex != nil {
		return m.Regex.MatchString(v)
	}
	return v == m.Value
}

// WeightedBackend is one backendRef of a rule. A reference that cannot be
// resolved keeps its weight and is answered 500, as the API asks, so that
// the valid backends keep their share and no more.
type WeightedBackend struct {
	Backend Backend
	Weight  int32
	Invalid bool
	// RequestHeaders and ResponseHeaders are the backendRef's own
	// filters, applied after the rule's.
	RequestHeaders, ResponseHeaders *HeaderChanges
	// TLS: the backend is reached over TLS and its certificate checked
	// (a BackendTLSPolicy); nil: plain HTTP.
	TLS *UpstreamTLS
}

// UpstreamTLS is how a backend's TLS is checked: its certificate must
// chain to Roots (nil: the system's) and name ServerName, or, when SANs
// or URIs are given, one of those.
type UpstreamTLS struct {
	ServerName string // sent as SNI
	Roots      *x509.CertPool
	SANs, URIs []string
	// ClientCert is shown to the backend when it asks (nil: none).
	ClientCert *tls.Certificate
	// Key identifies the configuration (transports are kept per key).
	Key string
	// Invalid: the policy cannot be used (its CAs do not resolve);
	// requests to the backend are answered 500, never sent unchecked.
	Invalid bool
}

// Retry sends a request again when its answer has one of Codes, or its
// connection fails, up to Attempts more times, Backoff apart.
type Retry struct {
	Codes    map[int]bool
	Attempts int
	Backoff  time.Duration
}

// Mirror sends a copy of Percent of the rule's requests to Backend; its
// answers are dropped.
type Mirror struct {
	Backend Backend
	Percent float64
}

// Filters are what a rule does to a request and its response.
type Filters struct {
	RequestHeaders, ResponseHeaders *HeaderChanges
	Redirect                        *RedirectTo
	Rewrite                         *URLRewrite
	CORS                            *GatewayCORS
	Retry                           *Retry
	Mirrors                         []Mirror
	// Timeout bounds the whole request, BackendTimeout each try (0: none).
	Timeout, BackendTimeout time.Duration
}

// HeaderChanges set, add and remove headers, in that order.
type HeaderChanges struct {
	Set, Add []Header
	Remove   []string
}

// Header is a header's name and value.
type Header struct{ Name, Value string }

// Apply changes h in place.
func (c *HeaderChanges) Apply(h http.Header) {
	if c == nil {
		return
	}
	for _, x := range c.Set {
		h.Set(x.Name, x.Value)
	}
	for _, x := range c.Add {
		if old := h.Get(x.Name); old != "" {
			h.Set(x.Name, old+","+x.Value) // one header line, as the conformance suite expects
		} else {
			h.Set(x.Name, x.Value)
		}
	}
	for _, n := range c.Remove {
		h.Del(n)
	}
}

// PathChange replaces the whole path (Full) or the part the rule's
// prefix matched (Prefix, when PrefixSet).
type PathChange struct {
	Full      string
	Prefix    string
	PrefixSet bool
}

// RedirectTo answers with a redirect built from the request; empty fields
// keep the request's value. Port 0 keeps the scheme's well-known port.
type RedirectTo struct {
	Scheme, Host string
	Port         int32
	Path         *PathChange
	Code         int
}

// URLRewrite changes the Host and path sent to the backend.
type URLRewrite struct {
	Host string
	Path *PathChange
}

// NewPath is the path a change makes of reqPath, which matched prefix.
func (c *PathChange) NewPath(reqPath, prefix string) string {
	if !c.PrefixSet {
		return c.Full
	}
	rest := reqPath
	if p := strings.TrimRight(prefix, "/"); strings.HasPrefix(reqPath, p) {
		rest = reqPath[len(p):]
	}
	out := strings.TrimRight(c.Prefix, "/") + rest
	if out == "" || out[0] != '/' {
		out = "/" + out
	}
	return out
}

// conditionsHold: the method, every header and every query condition.
func (r *Rule) conditionsHold(req *http.Request) bool {
	if r.Method != "" && req.Method != r.Method {
		return false
	}
	if r.PathRegex != nil && !r.PathRegex.MatchString(req.URL.Path) {
		return false
	}
	for _, m := range r.Headers {
		v, ok := req.Header[http.CanonicalHeaderKey(m.Name)]
		if !ok || !m.holds(strings.Join(v, ","), true) {
			return false
		}
	}
	if len(r.Query) > 0 {
		q := req.URL.Query()
		for _, m := range r.Query {
			v, ok := q[m.Name]
			if !ok || !m.holds(v[0], true) {
				return false
			}
		}
	}
	return true
}

// precedes is the Gateway API's order among rules of one path.
func (r *Rule) precedes(o *Rule) bool {
	if (r.Method != "") != (o.Method != "") {
		return r.Method != ""
	}
	if len(r.Headers) != len(o.Headers) {
		return len(r.Headers) > len(o.Headers)
	}
	if len(r.Query) != len(o.Query) {
		return len(r.Query) > len(o.Query)
	}
	if !r.Rank.Created.Equal(o.Rank.Created) {
		return r.Rank.Created.Before(o.Rank.Created)
	}
	if r.Rank.Name != o.Rank.Name {
		return r.Rank.Name < o.Rank.Name
	}
	return r.Rank.Index < o.Rank.Index
}

// AddRule adds a rule on a path of the host, creating the path's route.
func (vh *VirtualHost) AddRule(kind PathKind, p string, rule *Rule) {
	r := vh.find(kind, p)
	if r == nil {
		r = &Route{Path: p, Kind: kind, Source: rule.Source}
		vh.Add(r)
	}
	i := sort.Search(len(r.Rules), func(i int) bool { return rule.precedes(r.Rules[i]) })
	r.Rules = append(r.Rules, nil)
	copy(r.Rules[i+1:], r.Rules[i:])
	r.Rules[i] = rule
}

// Pick chooses a backend by weight; nil when every weight is 0.
func (r *Rule) Pick(intn func(int) int) *WeightedBackend {
	total := 0
	for _, b := range r.Backends {
		total += int(b.Weight)
	}
	if total <= 0 {
		return nil
	}
	n := intn(total)
	for i := range r.Backends {
		if n -= int(r.Backends[i].Weight); n < 0 {
			return &r.Backends[i]
		}
	}
	return nil
}

// PickRandom is Pick with the process's random source.
func (r *Rule) PickRandom() *WeightedBackend { return r.Pick(rand.IntN) }

// MatchRequest picks the route for a request as Match does, and among a
// Gateway API path's rules the first whose conditions hold; a path whose
// rules all refuse the request is passed over for shorter ones, and with
// DeepWildcards (Gateway API) a host whose routes all refuse it for less
// specific hosts. rule is nil for an Ingress route.
func (t *Table) MatchRequest(req *http.Request) (r *Route, rule *Rule, ok bool) {
	p := CleanPath(req.URL.Path)
	t.hosts(req.Host, func(vh *VirtualHost) bool {
		vh.each(p, func(c *Route) bool {
			if len(c.Rules) == 0 {
				r = c
				return true
			}
			for _, x := range c.Rules {
				if x.conditionsHold(req) {
					r, rule = c, x
					return true
				}
			}
			return false
		})
		return r != nil || !t.DeepWildcards
	})
	return r, rule, r != nil
}
