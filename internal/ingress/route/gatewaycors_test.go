package route

import (
	"net/http"
	"testing"
)

func TestGatewayCORS(t *testing.T) {
	strict := &GatewayCORS{Origins: []string{"https://www.foo.com", "https://*.bar.com"}, Methods: []string{"GET", "OPTIONS"},
		Headers: []string{"x-a"}, Expose: []string{"x-b", "x-c"}, Credentials: true, MaxAge: 3600}
	open := &GatewayCORS{Origins: []string{"*"}, Methods: []string{"*"}, Headers: []string{"*"}}
	openCreds := &GatewayCORS{Origins: []string{"*"}, Methods: []string{"*"}, Headers: []string{"*"}, Credentials: true}
	pre := func(origin, method, headers string) *http.Request {
		r := req("OPTIONS", "x", "/", "Origin", origin, "Access-Control-Request-Method", method)
		if headers != "" {
			r.Header.Set("Access-Control-Request-Headers", headers)
		}
		return r
	}
	cases := []struct {
		name string
		c    *GatewayCORS
		r    *http.Request
		want map[string]string // "" : absent
	}{
		{"exact origin", strict, pre("https://www.foo.com", "GET", "x-a"), map[string]string{"Access-Control-Allow-Origin": "https://www.foo.com",
			"Access-Control-Allow-Methods": "GET, OPTIONS", "Access-Control-Allow-Headers": "x-a", "Access-Control-Expose-Headers": "x-b, x-c",
			"Access-Control-Max-Age": "3600", "Access-Control-Allow-Credentials": "true"}},
		{"wildcard, two labels", strict, pre("https://a.b.bar.com", "GET", ""), map[string]string{"Access-Control-Allow-Origin": "https://a.b.bar.com"}},
		{"wildcard does not take its own suffix", strict, pre("https://bar.com", "GET", ""), map[string]string{"Access-Control-Allow-Origin": ""}},
		{"other scheme", strict, pre("http://www.foo.com", "GET", ""), map[string]string{"Access-Control-Allow-Origin": ""}},
		{"not allowed", strict, pre("https://foobar.com", "GET", ""), map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Allow-Methods": ""}},
		{"any, no credentials", open, pre("https://x.test", "PUT", "x-1"), map[string]string{"Access-Control-Allow-Origin": "*",
			"Access-Control-Allow-Methods": "PUT", "Access-Control-Allow-Credentials": "", "Access-Control-Max-Age": "5"}},
		{"any with credentials echoes", openCreds, pre("https://x.test", "PUT", "x-1, x-2"), map[string]string{"Access-Control-Allow-Origin": "https://x.test",
			"Access-Control-Allow-Methods": "PUT", "Access-Control-Allow-Headers": "x-1, x-2", "Access-Control-Allow-Credentials": "true"}},
	}
	for _, c := range cases {
		h := http.Header{}
		c.c.Preflight(h, c.r)
		for k, v := range c.want {
			if got := h.Get(k); got != v {
				t.Errorf("%s: %s = %q, want %q", c.name, k, got, v)
			}
		}
	}
	h := http.Header{}
	strict.Simple(h, req("GET", "x", "/", "Origin", "https://www.foo.com"))
	if h.Get("Access-Control-Allow-Origin") != "https://www.foo.com" || h.Get("Access-Control-Allow-Methods") != "" {
		t.Errorf("simple request: %v", h)
	}
	if !IsPreflight(pre("https://a", "GET", "")) || IsPreflight(req("OPTIONS", "x", "/", "Origin", "https://a")) {
		t.Error("IsPreflight")
	}
}
