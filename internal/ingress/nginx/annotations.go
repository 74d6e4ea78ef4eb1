// Package nginx reads ingress-nginx's annotations into weft's route
// policy, so Ingresses written for ingress-nginx keep their meaning. It
// parses and validates each value (nothing is pasted into any
// configuration language) and says of every annotation whether it is
// honoured, honoured differently, or ignored and why: the basis of both
// the Events on an Ingress and `weft ingress migrate`.
package nginx

import (
	"fmt"
	"net/netip"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"weft.dev/weft/internal/ingress/route"
)

// Prefix starts every ingress-nginx annotation.
const Prefix = "nginx.ingress.kubernetes.io/"

// Verdict is what weft does with one annotation.
type Verdict string

const (
	Honoured    Verdict = "honoured"
	Differently Verdict = "honoured differently"
	Ignored     Verdict = "ignored"
)

// Finding is the verdict on one annotation of an Ingress.
type Finding struct {
	Annotation, Value string
	Verdict           Verdict
	Why               string // for Differently and Ignored
}

// Parse reads an Ingress's ingress-nginx annotations into a route policy
// (nil when none applies) and a finding per annotation, sorted by name.
// sslRedirectDefault is ingress-nginx's own default for ssl-redirect: true
// when the Ingress has TLS for its hosts.
func Parse(ann map[string]string, sslRedirectDefault bool) (*route.Policy, []Finding) {
	p := &route.Policy{HTTPSRedirect: sslRedirectDefault}
	var out []Finding
	for name, value := range ann {
		key, ok := strings.CutPrefix(name, Prefix)
		if !ok {
			continue
		}
		f := Finding{Annotation: name, Value: value, Verdict: Honoured}
		if why, how := apply(p, key, value, ann); why != "" {
			f.Verdict, f.Why = how, why
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Annotation < out[j].Annotation })
	if reflect.ValueOf(*p).IsZero() {
		return nil, out
	}
	return p, out
}

// SSLRedirect is the ssl-redirect default to Parse an Ingress with: weft
// redirects a TLS Ingress's plain HTTP only when ssl-redirect says "true"
// (ingress-nginx's default for TLS hosts is not applied to class weft).
func SSLRedirect(ing *networkingv1.Ingress) bool {
	return len(ing.Spec.TLS) > 0 && ing.Annotations[Prefix+"ssl-redirect"] == "true"
}

// snippets are nginx configuration text: never honoured, whatever the
// operator allows (CVE-2025-1974 and CVE-2026-24512 came through them).
var snippets = map[string]bool{"configuration-snippet": true, "server-snippet": true, "auth-snippet": true,
	"stream-snippet": true, "modsecurity-snippet": true}

// apply sets what one annotation asks; a reason and verdict when it is
// not honoured as written.
func apply(p *route.Policy, key, value string, all map[string]string) (string, Verdict) {
	bad := func(format string, a ...any) (string, Verdict) { return fmt.Sprintf(format, a...), Ignored }
	if snippets[key] {
		return "snippets are nginx configuration text and are never honoured", Ignored
	}
	switch key {
	case "ssl-redirect":
		b, err := strconv.ParseBool(value)
		if err != nil {
			return bad("%q is not true or false", value)
		}
		if !b && all[Prefix+"force-ssl-redirect"] != "true" {
			p.HTTPSRedirect = false
		}
	case "force-ssl-redirect":
		b, err := strconv.ParseBool(value)
		if err != nil {
			return bad("%q is not true or false", value)
		}
		if b {
			p.HTTPSRedirect = true
		}
	case "permanent-redirect", "temporal-redirect":
		return redirect(p, key, value, all)
	case "permanent-redirect-code", "temporal-redirect-code":
		return "", Honoured // read with the redirect itself
	case "app-root":
		if err := route.ValidPath(value); err != nil || value == "/" {
			return bad("app-root %q: a path other than / (%v)", value, err)
		}
		p.AppRoot = value
	case "proxy-body-size":
		n, err := ParseSize(value)
		if err != nil {
			return bad("%v", err)
		}
		p.MaxBodyBytes, p.UnlimitedBody = n, n == 0
	case "upstream-vhost":
		if err := validHostPort(value); err != nil {
			return bad("upstream-vhost %q: %v", value, err)
		}
		p.Host = value
	case "x-forwarded-prefix":
		if err := route.ValidPath(value); err != nil {
			return bad("x-forwarded-prefix: %v", err)
		}
		p.ForwardedPrefix = value
	case "whitelist-source-range", "allowlist-source-range", "denylist-source-range":
		ranges, err := ParseRanges(value)
		if err != nil {
			return bad("%s: %v", key, err)
		}
		if key == "denylist-source-range" {
			p.Deny = append(p.Deny, ranges...)
		} else {
			p.Allow = append(p.Allow, ranges...)
		}
	case "backend-protocol":
		switch strings.ToUpper(value) {
		case "HTTP":
		case "GRPC":
			p.H2C = true
			return "gRPC is sent as HTTP/2 without TLS (h2c), as ingress-nginx does; a Service port's appProtocol kubernetes.io/h2c does the same", Differently
		case "HTTPS":
			p.BackendTLS = true
		case "GRPCS":
			p.BackendTLS, p.H2C = true, true
		default:
			return bad("backend protocol %q: want HTTP, HTTPS, GRPC or GRPCS", value)
		}
	case "enable-cors", "cors-allow-origin", "cors-allow-methods", "cors-allow-headers", "cors-expose-headers",
		"cors-allow-credentials", "cors-max-age":
		return cors(p, key, all)
	case "proxy-connect-timeout", "proxy-read-timeout":
		d, err := parseSeconds(value)
		if err != nil {
			return bad("%s: %v", key, err)
		}
		if key == "proxy-connect-timeout" {
			p.ConnectTimeout = d
		} else {
			p.ReadTimeout = d
			return "the wait for the response and between two reads of its body, as nginx; an open WebSocket is never cut for being idle", Differently
		}
	case "proxy-send-timeout":
		if _, err := parseSeconds(value); err != nil {
			return bad("%s: %v", key, err)
		}
		return "weft does not time writes to a backend on their own; the connect and read timeouts bound a stalled backend", Ignored
	case "use-regex":
		b, err := strconv.ParseBool(value)
		if err != nil {
			return bad("%q is not true or false", value)
		}
		p.Regex = p.Regex || b
	case "rewrite-target":
		if !strings.HasPrefix(value, "/") || strings.ContainsFunc(value, func(c rune) bool { return c <= ' ' || c >= 0x7f || c == '?' || c == '#' || c == '\\' }) {
			return bad("rewrite-target %q: want a path (with $1 to $9 for the regex path's groups), without spaces, query or fragment", value)
		}
		p.RewriteTarget, p.Regex = value, true
	case "canary", "canary-by-header", "canary-by-header-value", "canary-by-cookie", "canary-weight", "canary-weight-total":
		return canary(p, key, all)
	case "custom-headers":
		ns, name, found := strings.Cut(value, "/")
		if !found {
			ns, name = "", value
		}
		if (found && len(validation.IsDNS1123Label(ns)) > 0) || len(validation.IsDNS1123Subdomain(name)) > 0 {
			return bad("custom-headers %q: want a ConfigMap's name, or namespace/name", value)
		}
		p.HeadersFrom = value
		return "only a ConfigMap in the Ingress's own namespace is read; framing headers (Content-Length, Transfer-Encoding, Connection…) are refused", Differently
	case "canary-by-header-pattern":
		return "header patterns are not supported by weft; canary-by-header and canary-by-header-value are", Ignored
	case "affinity", "affinity-mode", "session-cookie-name", "session-cookie-path", "session-cookie-expires", "session-cookie-max-age":
		return affinity(p, key, all)
	default:
		return "not an ingress-nginx annotation weft knows", Ignored
	}
	return "", Honoured
}

// redirect reads permanent-redirect or temporal-redirect and its code.
func redirect(p *route.Policy, key, value string, all map[string]string) (string, Verdict) {
	u, err := url.Parse(value)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(value, "\r\n\t ") {
		return fmt.Sprintf("%s %q: want an absolute http or https URL", key, value), Ignored
	}
	code, lo, hi := 301, 300, 308
	if key == "temporal-redirect" {
		code = 302
		if p.Redirect != nil {
			return "permanent-redirect is set and wins", Ignored
		}
	}
	if c, ok := all[Prefix+key+"-code"]; ok {
		n, err := strconv.Atoi(c)
		if err != nil || n < lo || n > hi {
			return fmt.Sprintf("%s-code %q: want %d to %d", key, c, lo, hi), Ignored
		}
		code = n
	}
	p.Redirect = &route.Redirect{Code: code, Location: u.String()}
	return "", Honoured
}

// ParseSize reads nginx's size syntax: a number of bytes with an optional
// k, m or g suffix (either case); 0 means no limit.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mult, s = 1<<10, s[:n-1]
		case 'm', 'M':
			mult, s = 1<<20, s[:n-1]
		case 'g', 'G':
			mult, s = 1<<30, s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > (1<<40)/mult {
		return 0, fmt.Errorf("size %q: want bytes with an optional k, m or g, at most 1 TiB", s)
	}
	return v * mult, nil
}

// ParseRanges reads a comma-separated list of CIDRs or addresses.
func ParseRanges(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if pf, err := netip.ParsePrefix(part); err == nil {
			out = append(out, pf.Masked())
			continue
		}
		a, err := netip.ParseAddr(part)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an address", part)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no ranges in %q", s)
	}
	return out, nil
}

// validHostPort accepts a DNS name with an optional port.
func validHostPort(s string) error {
	host, port := s, ""
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q", port)
		}
	}
	if errs := validation.IsDNS1123Subdomain(host); len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// group reads the annotations of one setting made of several (cors-*,
// session-cookie-*, canary-*): every call of apply for any of them builds
// the whole setting (map order is random), and only the call for key
// reports its own value's problem.
type group struct {
	all      map[string]string
	key      string
	fallback string // what happens to a bad value, e.g. "the default is used"
	why      string
}

// read parses annotation k, when set, with parse.
func (g *group) read(k string, parse func(string) error) {
	if v, ok := g.all[Prefix+k]; ok {
		if err := parse(v); err != nil && k == g.key {
			g.why = fmt.Sprintf("%s: %v; %s", k, err, g.fallback)
		}
	}
}
