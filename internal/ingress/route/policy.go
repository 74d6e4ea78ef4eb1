package route

import (
	"net/netip"
	"regexp"
	"strings"
	"time"
)

// Policy is what a route does besides choosing a backend: redirects,
// limits and request changes. Ingress annotations (ingress-nginx's) and
// Gateway API filters both translate into it; the zero value does nothing.
type Policy struct {
	// Redirect answers every request with Code and Location instead of
	// proxying (permanent-redirect, temporal-redirect).
	Redirect *Redirect
	// HTTPSRedirect sends plain-HTTP requests to https:// with 308.
	HTTPSRedirect bool
	// AppRoot redirects requests for "/" there (302).
	AppRoot string
	// MaxBodyBytes overrides the proxy's body limit (0: the proxy's).
	MaxBodyBytes int64
	// UnlimitedBody lifts the body limit (proxy-body-size: 0).
	UnlimitedBody bool
	// Host replaces the Host header sent to the backend.
	Host string
	// ForwardedPrefix is sent as X-Forwarded-Prefix.
	ForwardedPrefix string
	// Allow, when not empty, are the only client addresses served; Deny
	// are refused (403), whatever Allow says.
	Allow, Deny []netip.Prefix
	// H2C sends to the backend with HTTP/2 without TLS (gRPC); with
	// BackendTLS, HTTP/2 over TLS.
	H2C bool
	// BackendTLS reaches the backend over TLS (backend-protocol HTTPS,
	// GRPCS), its certificate not checked, as nginx's default.
	BackendTLS bool
	// CORS answers preflight requests and adds CORS headers (nil: none).
	CORS *CORS
	// ConnectTimeout bounds connecting to an endpoint; ReadTimeout the
	// wait for the response's headers and between two reads of its body
	// (0: the proxy's).
	ConnectTimeout, ReadTimeout time.Duration
	// Affinity pins a client to an endpoint with a cookie (nil: none).
	Affinity *Affinity
	// Regex: the Ingress's paths are regular expressions, and with them
	// every path of its hosts (use-regex, rewrite-target).
	Regex bool
	// RewriteTarget replaces the request's path sent to the backend; $1
	// to $9 are the regex path's groups (rewrite-target).
	RewriteTarget string
	// Canary: the Ingress is a canary of the routes it repeats.
	Canary *CanaryRule
	// HeadersFrom names the ConfigMap ("name" or "namespace/name") whose
	// entries are set on every response (custom-headers); the controller
	// reads it into ResponseHeaders.
	HeadersFrom     string
	ResponseHeaders map[string]string
}

// Rewrite is the path sent to the backend for a request path that
// pattern matched: target with $N replaced by group N ("" when absent),
// as nginx's rewrite does; always absolute.
func Rewrite(target string, pattern *regexp.Regexp, reqPath string) string {
	var groups []string
	if pattern != nil {
		groups = pattern.FindStringSubmatch(reqPath)
	}
	var b strings.Builder
	for i := 0; i < len(target); i++ {
		c := target[i]
		if c == '$' && i+1 < len(target) && target[i+1] >= '0' && target[i+1] <= '9' {
			if n := int(target[i+1] - '0'); n < len(groups) {
				b.WriteString(groups[n])
			}
			i++
			continue
		}
		b.WriteByte(c)
	}
	out := b.String()
	if !strings.HasPrefix(out, "/") {
		out = "/" + out
	}
	return out
}

// CORS is a route's cross-origin policy.
type CORS struct {
	// Origins allowed: "*" (any), exact origins, or "scheme://*.domain"
	// for one level of subdomain; an optional port.
	Origins                         []string
	Methods, Headers, ExposeHeaders string
	Credentials                     bool
	MaxAgeSeconds                   int
}

// AllowOrigin is the Access-Control-Allow-Origin for a request's Origin
// ("" when that origin is not allowed).
func (c *CORS) AllowOrigin(origin string) string {
	for _, o := range c.Origins {
		if o == "*" {
			return "*"
		}
		if origin == "" {
			continue
		}
		if o == origin {
			return origin
		}
		// scheme://*.domain[:port] matches scheme://one-label.domain[:port].
		if scheme, rest, ok := strings.Cut(o, "://*."); ok {
			oscheme, ohost, ok := strings.Cut(origin, "://")
			label, tail, dot := strings.Cut(ohost, ".")
			if ok && dot && oscheme == scheme && tail == rest && label != "" && !strings.ContainsAny(label, ":/") {
				return origin
			}
		}
	}
	return ""
}

// Affinity is cookie-based session affinity.
type Affinity struct {
	Cookie string
	Path   string        // "" : the route's path
	MaxAge time.Duration // 0: a session cookie
}

// Redirect is a fixed redirect.
type Redirect struct {
	Code     int
	Location string
}

// Permits says whether a client address may use the route.
func (p *Policy) Permits(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, d := range p.Deny {
		if d.Contains(addr) {
			return false
		}
	}
	if len(p.Allow) == 0 {
		return true
	}
	for _, a := range p.Allow {
		if a.Contains(addr) {
			return true
		}
	}
	return false
}
