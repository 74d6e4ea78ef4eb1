package route

import (
	"net/http"
	"strconv"
	"strings"
)

// GatewayCORS is an HTTPRoute's CORS filter. Unlike ingress-nginx's, an
// origin wildcard ("https://*.example.com") takes any number of labels,
// and "*" in methods or headers allows whatever the browser asks for.
type GatewayCORS struct {
	Origins, Methods, Headers, Expose []string
	Credentials                       bool
	MaxAge                            int // seconds
}

// allowOrigin is the Access-Control-Allow-Origin for origin ("": none):
// the origin itself, or "*" when any origin is allowed without
// credentials (with credentials a browser refuses "*").
func (c *GatewayCORS) allowOrigin(origin string) string {
	if origin == "" {
		return ""
	}
	for _, o := range c.Origins {
		switch {
		case o == "*" && !c.Credentials:
			return "*"
		case o == "*", strings.EqualFold(o, origin):
			return origin
		}
		if scheme, suffix, ok := strings.Cut(o, "://*"); ok {
			os, oh, ok := strings.Cut(origin, "://")
			if ok && strings.EqualFold(os, scheme) && len(oh) > len(suffix) && strings.HasSuffix(strings.ToLower(oh), strings.ToLower(suffix)) {
				return origin
			}
		}
	}
	return ""
}

// IsPreflight: an OPTIONS request a browser sends before a cross-origin one.
func IsPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != ""
}

// Preflight writes the headers of a preflight answer (none for an origin
// not allowed).
func (c *GatewayCORS) Preflight(h http.Header, r *http.Request) {
	allow := c.allowOrigin(r.Header.Get("Origin"))
	if allow == "" {
		return
	}
	c.common(h, allow)
	h.Set("Access-Control-Allow-Methods", c.list(c.Methods, r.Header.Get("Access-Control-Request-Method")))
	if hs := c.list(c.Headers, r.Header.Get("Access-Control-Request-Headers")); hs != "" {
		h.Set("Access-Control-Allow-Headers", hs)
	}
	maxAge := c.MaxAge
	if maxAge == 0 {
		maxAge = 5 // the API's default
	}
	h.Set("Access-Control-Max-Age", strconv.Itoa(maxAge))
}

// Simple writes the CORS headers of an answer to a cross-origin request.
func (c *GatewayCORS) Simple(h http.Header, r *http.Request) {
	if allow := c.allowOrigin(r.Header.Get("Origin")); allow != "" {
		c.common(h, allow)
	}
}

func (c *GatewayCORS) common(h http.Header, allow string) {
	h.Set("Access-Control-Allow-Origin", allow)
	if allow != "*" {
		h.Add("Vary", "Origin")
	}
	if c.Credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if len(c.Expose) > 0 {
		h.Set("Access-Control-Expose-Headers", strings.Join(c.Expose, ", "))
	}
}

// list is an allowed list as a header value; "*" echoes what was asked
// (a browser takes "*" literally when credentials are allowed).
func (c *GatewayCORS) list(allowed []string, asked string) string {
	for _, a := range allowed {
		if a == "*" {
			if asked != "" {
				return asked
			}
			return "*"
		}
	}
	return strings.Join(allowed, ", ")
}
