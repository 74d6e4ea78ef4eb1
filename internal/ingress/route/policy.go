package route

import "net/netip"

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
	// H2C sends to the backend with HTTP/2 without TLS (gRPC).
	H2C bool
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
