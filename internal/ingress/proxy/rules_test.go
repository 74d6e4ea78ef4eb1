package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"weft.dev/weft/internal/ingress/route"
)

// TestGatewayRuleFilters serves Gateway API rules through the proxy's
// listener: header changes both ways, URL rewrite, redirects, weights and
// the 500 of a rule without a usable backend.
func TestGatewayRuleFilters(t *testing.T) {
	p, f := newProxy(t)
	addr := backendEcho(t, "echo")
	echo := route.Backend{Namespace: "ns", Service: "echo", Port: 80}
	tb := route.NewTable()
	tb.DeepWildcards = true
	vh := tb.Host("gw.example.com")
	to := func(b route.Backend) []route.WeightedBackend { return []route.WeightedBackend{{Backend: b, Weight: 1}} }
	vh.AddRule(route.Prefix, "/headers", &route.Rule{Source: "HTTPRoute ns/h", Backends: to(echo), Filters: route.Filters{
		RequestHeaders:  &route.HeaderChanges{Set: []route.Header{{Name: "X-Set", Value: "set"}}, Remove: []string{"X-Secret"}},
		ResponseHeaders: &route.HeaderChanges{Add: []route.Header{{Name: "X-Resp", Value: "r"}}},
	}})
	vh.AddRule(route.Prefix, "/prefix/one", &route.Rule{Source: "HTTPRoute ns/rw", Backends: to(echo), Filters: route.Filters{
		Rewrite: &route.URLRewrite{Host: "rewritten.example.com", Path: &route.PathChange{Prefix: "/one", PrefixSet: true}}}})
	vh.AddRule(route.Prefix, "/redirect", &route.Rule{Source: "HTTPRoute ns/r", Filters: route.Filters{
		Redirect: &route.RedirectTo{Scheme: "https", Port: 8443, Path: &route.PathChange{Full: "/new"}, Code: 301}}})
	vh.AddRule(route.Prefix, "/invalid", &route.Rule{Source: "HTTPRoute ns/i", Backends: []route.WeightedBackend{{Weight: 1, Invalid: true}}})
	vh.AddRule(route.Prefix, "/zero", &route.Rule{Source: "HTTPRoute ns/z", Backends: []route.WeightedBackend{{Backend: echo, Weight: 0}}})
	p.Swap(&Snapshot{Table: tb, Endpoints: map[route.Backend][]string{echo: {addr}}})

	resp, body := request(t, "GET", f.URL+"/headers/x", "gw.example.com", "X-Secret", "s")
	if resp.StatusCode != 200 || !strings.Contains(body, "x-set=set") || strings.Contains(body, "x-secret") || resp.Header.Get("X-Resp") != "r" {
		t.Errorf("header changes: %d %q, response X-Resp %q", resp.StatusCode, body, resp.Header.Get("X-Resp"))
	}
	if _, body := get(t, f.URL+"/prefix/one/two?q=1", "gw.example.com"); !strings.Contains(body, "host=rewritten.example.com path=/one/two") {
		t.Errorf("rewrite: %q", body)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r, _ := http.NewRequest("GET", f.URL+"/redirect/x?a=b", nil)
	r.Host = "gw.example.com"
	resp, err := noFollow.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != 301 || loc != "https://gw.example.com:8443/new?a=b" {
		t.Errorf("redirect: %d %q", resp.StatusCode, loc)
	}
	for _, path := range []string{"/invalid", "/zero"} {
		if code, _ := get(t, f.URL+path, "gw.example.com"); code != 500 {
			t.Errorf("%s: %d, want 500", path, code)
		}
	}
}

// backendEcho answers with the Host, path and every request header
// (lower-case name=value).
func backendEcho(t *testing.T, name string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s host=%s path=%s", name, r.Host, r.URL.Path)
		for k, v := range r.Header {
			fmt.Fprintf(w, " %s=%s", strings.ToLower(k), strings.Join(v, ","))
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}
