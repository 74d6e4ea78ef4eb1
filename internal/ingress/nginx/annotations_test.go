package nginx

import (
	"net/netip"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"weft.dev/weft/internal/ingress/route"
)

func TestParseEachAnnotation(t *testing.T) {
	pfx := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	cases := []struct {
		name string
		ann  map[string]string
		tls  bool
		want *route.Policy // nil: no policy
		// verdicts by annotation (without the prefix); unnamed: honoured
		verdicts map[string]Verdict
	}{
		{"none", nil, false, nil, nil},
		{"other prefixes are not ours", map[string]string{"example.com/x": "y"}, false, nil, nil},
		{"ssl-redirect default with TLS", nil, true, &route.Policy{HTTPSRedirect: true}, nil},
		{"ssl-redirect false", map[string]string{Prefix + "ssl-redirect": "false"}, true, nil, nil},
		{"force-ssl-redirect without TLS", map[string]string{Prefix + "force-ssl-redirect": "true"}, false, &route.Policy{HTTPSRedirect: true}, nil},
		{"force wins over ssl-redirect false", map[string]string{Prefix + "force-ssl-redirect": "true", Prefix + "ssl-redirect": "false"}, false, &route.Policy{HTTPSRedirect: true}, nil},
		{"ssl-redirect not a boolean", map[string]string{Prefix + "ssl-redirect": "yes please"}, true, &route.Policy{HTTPSRedirect: true}, map[string]Verdict{"ssl-redirect": Ignored}},
		{"permanent-redirect", map[string]string{Prefix + "permanent-redirect": "https://new.example.com/a"}, false,
			&route.Policy{Redirect: &route.Redirect{Code: 301, Location: "https://new.example.com/a"}}, nil},
		{"permanent-redirect-code", map[string]string{Prefix + "permanent-redirect": "https://n.example.com", Prefix + "permanent-redirect-code": "308"}, false,
			&route.Policy{Redirect: &route.Redirect{Code: 308, Location: "https://n.example.com"}}, nil},
		{"bad redirect code", map[string]string{Prefix + "permanent-redirect": "https://n.example.com", Prefix + "permanent-redirect-code": "200"}, false,
			nil, map[string]Verdict{"permanent-redirect": Ignored}},
		{"temporal-redirect", map[string]string{Prefix + "temporal-redirect": "http://t.example.com/x?y=1"}, false,
			&route.Policy{Redirect: &route.Redirect{Code: 302, Location: "http://t.example.com/x?y=1"}}, nil},
		{"a redirect that is not a URL", map[string]string{Prefix + "permanent-redirect": "javascript:alert(1)"}, false, nil, map[string]Verdict{"permanent-redirect": Ignored}},
		{"a redirect with a newline", map[string]string{Prefix + "temporal-redirect": "http://a.example.com/\r\nSet-Cookie: x"}, false, nil, map[string]Verdict{"temporal-redirect": Ignored}},
		{"app-root", map[string]string{Prefix + "app-root": "/app"}, false, &route.Policy{AppRoot: "/app"}, nil},
		{"app-root not a path", map[string]string{Prefix + "app-root": "app/../x"}, false, nil, map[string]Verdict{"app-root": Ignored}},
		{"proxy-body-size", map[string]string{Prefix + "proxy-body-size": "8m"}, false, &route.Policy{MaxBodyBytes: 8 << 20}, nil},
		{"proxy-body-size 0 lifts the limit", map[string]string{Prefix + "proxy-body-size": "0"}, false, &route.Policy{UnlimitedBody: true}, nil},
		{"proxy-body-size nonsense", map[string]string{Prefix + "proxy-body-size": "8 megs"}, false, nil, map[string]Verdict{"proxy-body-size": Ignored}},
		{"upstream-vhost", map[string]string{Prefix + "upstream-vhost": "internal.svc:8080"}, false, &route.Policy{Host: "internal.svc:8080"}, nil},
		{"upstream-vhost injection", map[string]string{Prefix + "upstream-vhost": "a.example.com\r\nX: y"}, false, nil, map[string]Verdict{"upstream-vhost": Ignored}},
		{"x-forwarded-prefix", map[string]string{Prefix + "x-forwarded-prefix": "/api"}, false, &route.Policy{ForwardedPrefix: "/api"}, nil},
		{"source ranges", map[string]string{Prefix + "whitelist-source-range": "10.0.0.0/8, 192.168.1.7", Prefix + "denylist-source-range": "10.1.0.0/16"}, false,
			&route.Policy{Allow: []netip.Prefix{pfx("10.0.0.0/8"), pfx("192.168.1.7/32")}, Deny: []netip.Prefix{pfx("10.1.0.0/16")}}, nil},
		{"a bad range", map[string]string{Prefix + "denylist-source-range": "10.0.0.0/33"}, false, nil, map[string]Verdict{"denylist-source-range": Ignored}},
		{"backend-protocol GRPC", map[string]string{Prefix + "backend-protocol": "GRPC"}, false, &route.Policy{H2C: true}, map[string]Verdict{"backend-protocol": Differently}},
		{"backend-protocol HTTPS", map[string]string{Prefix + "backend-protocol": "HTTPS"}, false, &route.Policy{BackendTLS: true}, nil},
		{"backend-protocol GRPCS", map[string]string{Prefix + "backend-protocol": "GRPCS"}, false, &route.Policy{BackendTLS: true, H2C: true}, nil},
		{"snippets never", map[string]string{Prefix + "configuration-snippet": "return 200;", Prefix + "server-snippet": "x"}, false, nil,
			map[string]Verdict{"configuration-snippet": Ignored, "server-snippet": Ignored}},
		{"custom-headers", map[string]string{Prefix + "custom-headers": "ns/cm"}, false, &route.Policy{HeadersFrom: "ns/cm"}, map[string]Verdict{"custom-headers": Differently}},
		{"custom-headers not a name", map[string]string{Prefix + "custom-headers": "ns/cm/../x"}, false, nil, map[string]Verdict{"custom-headers": Ignored}},
		{"canary by weight", map[string]string{Prefix + "canary": "true", Prefix + "canary-weight": "20"}, false,
			&route.Policy{Canary: &route.CanaryRule{Weight: 20, WeightTotal: 100}}, nil},
		{"canary by header value, cookie and weight total", map[string]string{Prefix + "canary": "true", Prefix + "canary-by-header": "X-Canary",
			Prefix + "canary-by-header-value": "yes", Prefix + "canary-by-cookie": "beta", Prefix + "canary-weight": "1", Prefix + "canary-weight-total": "1000"}, false,
			&route.Policy{Canary: &route.CanaryRule{Header: "X-Canary", HeaderValue: "yes", Cookie: "beta", Weight: 1, WeightTotal: 1000}}, nil},
		{"canary-* without canary", map[string]string{Prefix + "canary-weight": "20"}, false, nil, map[string]Verdict{"canary-weight": Ignored}},
		{"canary weight over the total", map[string]string{Prefix + "canary": "true", Prefix + "canary-weight": "150"}, false,
			&route.Policy{Canary: &route.CanaryRule{WeightTotal: 100}}, map[string]Verdict{"canary-weight": Ignored}},
		{"canary header value without a header", map[string]string{Prefix + "canary": "true", Prefix + "canary-by-header-value": "yes"}, false,
			&route.Policy{Canary: &route.CanaryRule{WeightTotal: 100}}, map[string]Verdict{"canary-by-header-value": Ignored}},
		{"canary header pattern", map[string]string{Prefix + "canary": "true", Prefix + "canary-by-header-pattern": "^a.*"}, false,
			&route.Policy{Canary: &route.CanaryRule{WeightTotal: 100}}, map[string]Verdict{"canary-by-header-pattern": Ignored}},
		{"rewrite-target", map[string]string{Prefix + "rewrite-target": "/$2"}, false, &route.Policy{RewriteTarget: "/$2", Regex: true}, nil},
		{"use-regex", map[string]string{Prefix + "use-regex": "true"}, false, &route.Policy{Regex: true}, nil},
		{"rewrite-target implies regex", map[string]string{Prefix + "rewrite-target": "/x/$1", Prefix + "use-regex": "false"}, false,
			&route.Policy{RewriteTarget: "/x/$1", Regex: true}, nil},
		{"rewrite-target with a query", map[string]string{Prefix + "rewrite-target": "/x?admin=1"}, false, nil, map[string]Verdict{"rewrite-target": Ignored}},
		{"rewrite-target with a line break", map[string]string{Prefix + "rewrite-target": "/x\r\nX-Admin: 1"}, false, nil, map[string]Verdict{"rewrite-target": Ignored}},
		{"enable-cors with defaults", map[string]string{Prefix + "enable-cors": "true"}, false, &route.Policy{CORS: &route.CORS{Origins: []string{"*"},
			Methods: corsMethods, Headers: corsHeaders, Credentials: true, MaxAgeSeconds: 1728000}}, nil},
		{"cors settings", map[string]string{Prefix + "enable-cors": "true", Prefix + "cors-allow-origin": "https://a.example.com:4443, http://*.b.example.com",
			Prefix + "cors-allow-methods": "GET,POST", Prefix + "cors-allow-headers": "X-Token, Content-Type", Prefix + "cors-expose-headers": "X-Id",
			Prefix + "cors-allow-credentials": "false", Prefix + "cors-max-age": "60"}, false,
			&route.Policy{CORS: &route.CORS{Origins: []string{"https://a.example.com:4443", "http://*.b.example.com"}, Methods: "GET, POST",
				Headers: "X-Token, Content-Type", ExposeHeaders: "X-Id", MaxAgeSeconds: 60}}, nil},
		{"cors-* without enable-cors", map[string]string{Prefix + "cors-allow-origin": "https://a.example.com"}, false, nil,
			map[string]Verdict{"cors-allow-origin": Ignored}},
		{"a header injected into cors-allow-headers", map[string]string{Prefix + "enable-cors": "true", Prefix + "cors-allow-headers": "X-A\r\nSet-Cookie: x"}, false,
			&route.Policy{CORS: &route.CORS{Origins: []string{"*"}, Methods: corsMethods, Headers: corsHeaders, Credentials: true, MaxAgeSeconds: 1728000}},
			map[string]Verdict{"cors-allow-headers": Ignored}},
		{"an origin with a path", map[string]string{Prefix + "enable-cors": "true", Prefix + "cors-allow-origin": "https://a.example.com/x"}, false,
			&route.Policy{CORS: &route.CORS{Origins: []string{"*"}, Methods: corsMethods, Headers: corsHeaders, Credentials: true, MaxAgeSeconds: 1728000}},
			map[string]Verdict{"cors-allow-origin": Ignored}},
		{"timeouts", map[string]string{Prefix + "proxy-connect-timeout": "2", Prefix + "proxy-read-timeout": "30", Prefix + "proxy-send-timeout": "30"}, false,
			&route.Policy{ConnectTimeout: 2 * time.Second, ReadTimeout: 30 * time.Second},
			map[string]Verdict{"proxy-read-timeout": Differently, "proxy-send-timeout": Ignored}},
		{"a timeout with a unit", map[string]string{Prefix + "proxy-connect-timeout": "5s"}, false, nil, map[string]Verdict{"proxy-connect-timeout": Ignored}},
		{"affinity cookie", map[string]string{Prefix + "affinity": "cookie", Prefix + "session-cookie-name": "route", Prefix + "session-cookie-path": "/app",
			Prefix + "session-cookie-expires": "100", Prefix + "session-cookie-max-age": "200", Prefix + "affinity-mode": "persistent"}, false,
			&route.Policy{Affinity: &route.Affinity{Cookie: "route", Path: "/app", MaxAge: 200 * time.Second}},
			map[string]Verdict{"session-cookie-expires": Differently}},
		{"affinity defaults", map[string]string{Prefix + "affinity": "cookie", Prefix + "affinity-mode": "balanced"}, false,
			&route.Policy{Affinity: &route.Affinity{Cookie: "INGRESSCOOKIE"}}, map[string]Verdict{"affinity-mode": Differently}},
		{"a cookie name that injects", map[string]string{Prefix + "affinity": "cookie", Prefix + "session-cookie-name": "a=b; Domain=evil.example"}, false,
			&route.Policy{Affinity: &route.Affinity{Cookie: "INGRESSCOOKIE"}}, map[string]Verdict{"session-cookie-name": Ignored}},
		{"session-cookie-* without affinity", map[string]string{Prefix + "session-cookie-name": "x"}, false, nil, map[string]Verdict{"session-cookie-name": Ignored}},
		{"affinity other than cookie", map[string]string{Prefix + "affinity": "ip"}, false, nil, map[string]Verdict{"affinity": Ignored}},
		{"unknown", map[string]string{Prefix + "made-up": "1"}, false, nil, map[string]Verdict{"made-up": Ignored}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, findings := Parse(c.ann, c.tls)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("policy %+v, want %+v", got, c.want)
			}
			for _, f := range findings {
				want := c.verdicts[strings.TrimPrefix(f.Annotation, Prefix)]
				if want == "" {
					want = Honoured
				}
				if f.Verdict != want {
					t.Errorf("%s=%q: %s (%s), want %s", f.Annotation, f.Value, f.Verdict, f.Why, want)
				}
				if f.Verdict != Honoured && f.Why == "" {
					t.Errorf("%s: %s without a reason", f.Annotation, f.Verdict)
				}
			}
			if n := len(findings); n != countOurs(c.ann) {
				t.Errorf("%d findings for %d annotations", n, countOurs(c.ann))
			}
		})
	}
}

func countOurs(ann map[string]string) int {
	n := 0
	for k := range ann {
		if strings.HasPrefix(k, Prefix) {
			n++
		}
	}
	return n
}

func TestPermits(t *testing.T) {
	p, _ := Parse(map[string]string{Prefix + "whitelist-source-range": "10.0.0.0/8", Prefix + "denylist-source-range": "10.9.0.0/16"}, false)
	for addr, want := range map[string]bool{"10.1.2.3": true, "10.9.0.1": false, "192.168.0.1": false, "::ffff:10.1.2.3": true} {
		if got := p.Permits(netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s: %v, want %v", addr, got, want)
		}
	}
}

// Whatever the annotations, Parse never panics, and what it honours is
// safe to use: redirects are absolute http(s) URLs without spaces or line
// breaks, paths and hosts carry no control characters.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"permanent-redirect=https://a.example.com/x", "app-root=/app", "proxy-body-size=10k",
		"upstream-vhost=a.example.com:81", "whitelist-source-range=10.0.0.0/8,::1", "backend-protocol=grpc", "ssl-redirect=false",
		"enable-cors=true", "proxy-read-timeout=60", "affinity=cookie", "rewrite-target=/$1"} {
		k, v, _ := strings.Cut(s, "=")
		f.Add(k, v)
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		// With the switches on, so the settings that need them are read.
		ann := map[string]string{Prefix + key: value, Prefix + "enable-cors": "true", Prefix + "affinity": "cookie"}
		p, findings := Parse(ann, true)
		if len(findings) != len(ann) {
			t.Fatalf("%d findings", len(findings))
		}
		if p == nil {
			return
		}
		if r := p.Redirect; r != nil {
			u, err := url.Parse(r.Location)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || strings.ContainsAny(r.Location, " \r\n\t") || r.Code < 300 || r.Code > 308 {
				t.Errorf("unsafe redirect %+v", r)
			}
		}
		texts := []string{p.AppRoot, p.Host, p.ForwardedPrefix, p.RewriteTarget}
		if c := p.CORS; c != nil {
			texts = append(append(texts, c.Origins...), c.Methods, c.Headers, c.ExposeHeaders)
		}
		if a := p.Affinity; a != nil {
			texts = append(texts, a.Cookie, a.Path)
			if strings.ContainsAny(a.Cookie, ";=, ") || strings.ContainsAny(a.Path, "; ") {
				t.Errorf("cookie name %q", a.Cookie)
			}
		}
		for _, s := range texts {
			if strings.ContainsFunc(s, func(c rune) bool { return c < ' ' || c == 0x7f }) {
				t.Errorf("control character in %q", s)
			}
		}
		if p.MaxBodyBytes < 0 {
			t.Errorf("negative body limit %d", p.MaxBodyBytes)
		}
	})
}

// ssl-redirect "true" redirects a TLS Ingress's plain HTTP; without TLS,
// or without the annotation, nothing is redirected.
func TestSSLRedirectAskedWithTLS(t *testing.T) {
	withTLS := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{Prefix + "ssl-redirect": "true"}},
		Spec: networkingv1.IngressSpec{TLS: []networkingv1.IngressTLS{{Hosts: []string{"a.example.com"}, SecretName: "a"}}}}
	noTLS := withTLS.DeepCopy()
	noTLS.Spec.TLS = nil
	unasked := withTLS.DeepCopy()
	unasked.Annotations = nil
	for _, c := range []struct {
		ing  *networkingv1.Ingress
		want bool
	}{{withTLS, true}, {noTLS, false}, {unasked, false}} {
		pol, _ := Parse(c.ing.Annotations, SSLRedirect(c.ing))
		if got := pol != nil && pol.HTTPSRedirect; got != c.want {
			t.Errorf("TLS %v, annotations %v: redirect %v, want %v", len(c.ing.Spec.TLS) > 0, c.ing.Annotations, got, c.want)
		}
	}
}
