// Package route is the ingress proxy's routing model: virtual hosts with
// their path routes and backends, and how a request picks one. Ingress
// (and later Gateway API routes) are translated into it; the proxy serves
// only this model. It is pure: no client-go informers, no sockets.
package route

import (
	"path"
	"regexp"
	"sort"
	"strings"
)

// PathKind is how a route's path is compared with a request's.
type PathKind int

// The path kinds of Ingress v1. ImplementationSpecific paths are
// translated to Prefix (docs/ingress.md).
const (
	Exact PathKind = iota
	Prefix
	// Regex: a regular expression matched case-insensitively from the
	// start of the path (ingress-nginx's use-regex and rewrite-target).
	Regex
)

func (k PathKind) String() string {
	switch k {
	case Exact:
		return "Exact"
	case Regex:
		return "Regex"
	}
	return "Prefix"
}

// Backend is a Service port that serves a route.
type Backend struct {
	Namespace, Service string
	// Port is the Service port's number, or 0 when PortName names it.
	Port     int32
	PortName string
}

// Route is one path of one virtual host.
type Route struct {
	Path    string // as written; Prefix paths are matched without a trailing slash
	Kind    PathKind
	Backend Backend
	// Source names the object the route came from (namespace/name).
	Source string
	// Policy is nil for a plain route.
	Policy *Policy
	// Pattern is a Regex route's compiled path.
	Pattern *regexp.Regexp
	// Canary is another backend some of the route's requests go to.
	Canary *Canary
	// Rules are a Gateway API path's rules in precedence order (nil for
	// an Ingress route, which serves Backend).
	Rules []*Rule
}

// CanaryRule says which requests go to a canary (ingress-nginx's canary
// annotations): by header, then by cookie, then by weight.
type CanaryRule struct {
	// Header: a request with Header "always" goes to the canary, "never"
	// to the main backend; with HeaderValue, exactly that value goes to
	// the canary.
	Header, HeaderValue string
	// Cookie: a request with this cookie "always" or "never".
	Cookie string
	// Weight of WeightTotal requests go to the canary (0: none).
	Weight, WeightTotal int
}

// Canary is a route's second backend.
type Canary struct {
	CanaryRule
	Backend Backend
	Source  string // the canary Ingress
}

// find returns the route of a kind and path as added.
func (vh *VirtualHost) find(kind PathKind, p string) *Route {
	switch kind {
	case Exact:
		return vh.exact[p]
	case Prefix:
		return vh.prefix[prefixKey(p)]
	}
	for _, r := range vh.regex {
		if r.Path == p {
			return r
		}
	}
	return nil
}

// VirtualHost holds the routes of one host: an exact name, a wildcard
// ("*.example.com": one label in front), or "" for every host.
type VirtualHost struct {
	Host   string
	exact  map[string]*Route
	prefix map[string]*Route // keyed by the path without a trailing slash
	regex  []*Route          // longest path first
}

// Table is the whole routing model, swapped whole on every change.
type Table struct {
	exact    map[string]*VirtualHost // by lower-case host
	wildcard map[string]*VirtualHost // by the suffix after "*."
	any      *VirtualHost
	// Default serves requests no route matches (nil: 404).
	Default *Backend
	// DeepWildcards: "*.example.com" stands for any number of labels in
	// front, the longest suffix first (Gateway API); else one label
	// (Ingress).
	DeepWildcards bool
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{exact: map[string]*VirtualHost{}, wildcard: map[string]*VirtualHost{}}
}

// Host returns the virtual host for a host pattern, creating it.
func (t *Table) Host(host string) *VirtualHost {
	host = strings.ToLower(host)
	var m map[string]*VirtualHost
	key := host
	switch {
	case host == "":
		if t.any == nil {
			t.any = newVirtualHost("")
		}
		return t.any
	case strings.HasPrefix(host, "*."):
		m, key = t.wildcard, host[2:]
	default:
		m = t.exact
	}
	vh := m[key]
	if vh == nil {
		vh = newVirtualHost(host)
		m[key] = vh
	}
	return vh
}

func newVirtualHost(host string) *VirtualHost {
	return &VirtualHost{Host: host, exact: map[string]*Route{}, prefix: map[string]*Route{}}
}

// Add adds a route; it returns the route already holding the same path
// and kind (which keeps it), or nil.
func (vh *VirtualHost) Add(r *Route) *Route {
	if r.Kind == Regex {
		return vh.addRegex(r)
	}
	m, key := vh.exact, r.Path
	if r.Kind == Prefix {
		m, key = vh.prefix, prefixKey(r.Path)
	}
	if old := m[key]; old != nil {
		return old
	}
	m[key] = r
	return nil
}

// addRegex keeps regex routes longest path first (ingress-nginx's order;
// the first that matches serves), the older of equal length first.
func (vh *VirtualHost) addRegex(r *Route) *Route {
	for _, old := range vh.regex {
		if old.Path == r.Path {
			return old
		}
	}
	i := sort.Search(len(vh.regex), func(i int) bool { return len(vh.regex[i].Path) < len(r.Path) })
	vh.regex = append(vh.regex, nil)
	copy(vh.regex[i+1:], vh.regex[i:])
	vh.regex[i] = r
	return nil
}

// Len is the number of routes.
func (vh *VirtualHost) Len() int { return len(vh.exact) + len(vh.prefix) + len(vh.regex) }

func prefixKey(p string) string {
	if p != "/" {
		p = strings.TrimRight(p, "/")
	}
	if p == "" {
		return "/"
	}
	return p
}

// Match picks the route for a request: the virtual host by exact name,
// then wildcard, then the catch-all; in it the longest matching path, an
// Exact path before a Prefix path of the same length. ok is false when
// nothing matches (the caller then uses Default, or answers 404).
func (t *Table) Match(host, reqPath string) (r *Route, ok bool) {
	vh := t.hostFor(host)
	if vh == nil {
		return nil, false
	}
	return vh.match(CleanPath(reqPath))
}

func (t *Table) hostFor(host string) *VirtualHost {
	var found *VirtualHost
	t.hosts(host, func(vh *VirtualHost) bool { found = vh; return true })
	return found
}

// hosts offers the virtual hosts a request's host matches, most specific
// first, until take returns true: the exact name, wildcards (one label
// in front, or with DeepWildcards any number, the longest suffix first),
// the catch-all.
func (t *Table) hosts(host string, take func(*VirtualHost) bool) {
	host = strings.ToLower(stripPort(host))
	if vh := t.exact[host]; vh != nil && take(vh) {
		return
	}
	for rest := host; ; {
		i := strings.IndexByte(rest, '.')
		if i <= 0 {
			break
		}
		rest = rest[i+1:]
		if vh := t.wildcard[rest]; vh != nil && take(vh) {
			return
		}
		if !t.DeepWildcards {
			break
		}
	}
	if t.any != nil {
		take(t.any)
	}
}

// match: the first route each offers.
func (vh *VirtualHost) match(p string) (*Route, bool) {
	var r *Route
	vh.each(p, func(c *Route) bool { r = c; return true })
	return r, r != nil
}

// each offers the routes matching path p, best first, until take returns
// true: an Exact route can only match the whole path, which is longer
// than any Prefix match on it or as long; then regex routes; then Prefix
// routes from the longest element-wise prefix down to "/".
func (vh *VirtualHost) each(p string, take func(*Route) bool) {
	if r := vh.exact[p]; r != nil && take(r) {
		return
	}
	for _, r := range vh.regex {
		if r.Pattern.MatchString(p) && take(r) {
			return
		}
	}
	cur := prefixKey(p)
	for {
		if r := vh.prefix[cur]; r != nil && take(r) {
			return
		}
		if cur == "/" {
			return
		}
		i := strings.LastIndexByte(cur, '/')
		if i <= 0 {
			cur = "/"
		} else {
			cur = cur[:i]
		}
	}
}

// CleanPath resolves "." and ".." elements and repeated slashes in a
// request path, as a proxy must before matching (else /public/../admin
// would match /public), keeping a trailing slash, which Exact paths tell
// apart.
func CleanPath(p string) string {
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// HostOnly is a Host header's name: lower-case, without port or final dot.
func HostOnly(host string) string { return strings.ToLower(stripPort(host)) }

func stripPort(host string) string {
	if strings.HasPrefix(host, "[") {
		if i := strings.IndexByte(host, ']'); i > 0 {
			return host[1:i]
		}
		return host
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 && strings.Count(host, ":") == 1 {
		host = host[:i]
	}
	return strings.TrimSuffix(host, ".")
}

// Routes lists every route of every virtual host.
func (t *Table) Routes() []*Route {
	var out []*Route
	add := func(vh *VirtualHost) {
		for _, r := range vh.exact {
			out = append(out, r)
		}
		for _, r := range vh.prefix {
			out = append(out, r)
		}
		out = append(out, vh.regex...)
	}
	for _, vh := range t.exact {
		add(vh)
	}
	for _, vh := range t.wildcard {
		add(vh)
	}
	if t.any != nil {
		add(t.any)
	}
	return out
}
