package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/ingress/route"
)

// CORS: a preflight is answered by the proxy; a request from an allowed
// origin gets its headers (the backend's own replaced); another origin
// gets none.
func TestCORS(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "https://backend.example")
		io.WriteString(w, "ok "+r.Method)
	}))
	defer be.Close()
	p, srv := newProxy(t)
	vh := route.NewTable()
	vh.Host("app.example.com").Add(&route.Route{Path: "/", Kind: route.Prefix, Backend: web, Source: "ns/cors",
		Policy: &route.Policy{CORS: &route.CORS{Origins: []string{"https://a.example.com", "https://*.b.example.com"},
			Methods: "GET, POST", Headers: "X-Token", ExposeHeaders: "X-Id", Credentials: true, MaxAgeSeconds: 60}}})
	p.Swap(&Snapshot{Table: vh, Endpoints: map[route.Backend][]string{web: {strings.TrimPrefix(be.URL, "http://")}}})

	pre, _ := request(t, "OPTIONS", srv.URL+"/x", "app.example.com", "Origin", "https://a.example.com", "Access-Control-Request-Method", "POST")
	want := map[string]string{"Access-Control-Allow-Origin": "https://a.example.com", "Access-Control-Allow-Methods": "GET, POST",
		"Access-Control-Allow-Headers": "X-Token", "Access-Control-Max-Age": "60", "Access-Control-Allow-Credentials": "true"}
	if pre.StatusCode != http.StatusNoContent {
		t.Errorf("preflight: %d, want 204", pre.StatusCode)
	}
	for k, v := range want {
		if got := pre.Header.Get(k); got != v {
			t.Errorf("preflight %s: %q, want %q", k, got, v)
		}
	}
	got, _ := request(t, "GET", srv.URL+"/x", "app.example.com", "Origin", "https://x.b.example.com")
	if h := got.Header.Values("Access-Control-Allow-Origin"); len(h) != 1 || h[0] != "https://x.b.example.com" || got.Header.Get("Access-Control-Expose-Headers") != "X-Id" {
		t.Errorf("simple request from a wildcard subdomain: %v", got.Header)
	}
	for _, origin := range []string{"https://evil.example.com", "https://x.y.b.example.com", "http://a.example.com"} {
		got, _ = request(t, "GET", srv.URL+"/x", "app.example.com", "Origin", origin)
		if h := got.Header.Get("Access-Control-Allow-Origin"); h != "https://backend.example" {
			t.Errorf("origin %s: Allow-Origin %q, want only the backend's own", origin, h)
		}
	}
	// An OPTIONS that is not a preflight goes to the backend.
	if r, _ := request(t, "OPTIONS", srv.URL+"/x", "app.example.com"); r.StatusCode != 200 {
		t.Errorf("plain OPTIONS: %d", r.StatusCode)
	}
}

// Affinity: the first response sets a cookie; with it every request goes
// to the same endpoint; a cookie naming a gone endpoint is replaced.
func TestAffinityCookie(t *testing.T) {
	a, b := backend(t, "a"), backend(t, "b")
	p, srv := newProxy(t)
	vh := route.NewTable()
	vh.Host("app.example.com").Add(&route.Route{Path: "/app", Kind: route.Prefix, Backend: web, Source: "ns/sticky",
		Policy: &route.Policy{Affinity: &route.Affinity{Cookie: "route", MaxAge: time.Hour}}})
	p.Swap(&Snapshot{Table: vh, Endpoints: map[route.Backend][]string{web: {a, b}}})
	do := func(cookie string) (string, *http.Cookie) {
		req, _ := http.NewRequest("GET", srv.URL+"/app", nil)
		req.Host = "app.example.com"
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: "route", Value: cookie})
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var set *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == "route" {
				set = c
			}
		}
		return strings.Fields(string(body))[0], set
	}
	first, set := do("")
	if set == nil || set.Path != "/app" || set.MaxAge != 3600 || !set.HttpOnly || strings.Contains(set.Value, "127.0.0.1") {
		t.Fatalf("first response's cookie: %+v", set)
	}
	for i := 0; i < 6; i++ {
		name, again := do(set.Value)
		if name != first || again != nil {
			t.Fatalf("request %d with the cookie went to %s (want %s), cookie set again: %v", i, name, first, again)
		}
	}
	// Without the cookie the proxy balances.
	seen := map[string]bool{}
	for i := 0; i < 4; i++ {
		name, _ := do("")
		seen[name] = true
	}
	if len(seen) != 2 {
		t.Errorf("without a cookie: only %v", seen)
	}
	// The pinned endpoint goes: the next one serves and the cookie moves.
	rest := b
	if first == "b" {
		rest = a
	}
	p.Swap(&Snapshot{Table: vh, Endpoints: map[route.Backend][]string{web: {rest}}})
	name, moved := do(set.Value)
	if name == first || moved == nil || moved.Value == set.Value {
		t.Errorf("after %s went: served by %s, cookie %+v", first, name, moved)
	}
}

// Timeouts: a backend slower than the route's read timeout, for its
// headers or between two parts of its body, is cut off; a dial is bounded
// by the route's connect timeout.
func TestRouteTimeouts(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch strings.TrimPrefix(r.URL.Path, "/patient") {
		case "/slow-headers":
			time.Sleep(600 * time.Millisecond)
		case "/slow-body":
			io.WriteString(w, "part one\n")
			w.(http.Flusher).Flush()
			time.Sleep(600 * time.Millisecond)
		}
		io.WriteString(w, "done\n")
	}))
	defer be.Close()
	p, srv := newProxy(t)
	vh := route.NewTable()
	quick := &route.Policy{ReadTimeout: 200 * time.Millisecond}
	for _, path := range []string{"/slow-headers", "/slow-body", "/fast"} {
		vh.Host("app.example.com").Add(&route.Route{Path: path, Kind: route.Prefix, Backend: web, Source: "ns" + path, Policy: quick})
	}
	vh.Host("app.example.com").Add(&route.Route{Path: "/patient", Kind: route.Prefix, Backend: api, Source: "ns/patient"})
	beAddr := strings.TrimPrefix(be.URL, "http://")
	p.Swap(&Snapshot{Table: vh, Endpoints: map[route.Backend][]string{web: {beAddr}, api: {beAddr}}})

	if code, _ := get(t, srv.URL+"/slow-headers", "app.example.com"); code != http.StatusGatewayTimeout {
		t.Errorf("slow headers: %d, want 504", code)
	}
	if code, body := get(t, srv.URL+"/slow-body", "app.example.com"); strings.Contains(body, "done") {
		t.Errorf("slow body: %d %q, want it cut after part one", code, body)
	}
	if code, body := get(t, srv.URL+"/fast", "app.example.com"); code != 200 || body != "done\n" {
		t.Errorf("fast: %d %q", code, body)
	}
	if code, body := get(t, srv.URL+"/patient/slow-headers", "app.example.com"); code != 200 || !strings.Contains(body, "done") {
		t.Errorf("a route without a read timeout: %d %q", code, body)
	}
	// The connect timeout: the route's, else the proxy's.
	ctx := context.WithValue(context.Background(), ctxKey{}, &pick{policy: &route.Policy{ConnectTimeout: 300 * time.Millisecond}})
	if d := p.dialTimeout(ctx); d != 300*time.Millisecond {
		t.Errorf("route's connect timeout: %s", d)
	}
	if d := p.dialTimeout(context.WithValue(context.Background(), ctxKey{}, &pick{})); d != DefaultConfig().DialTimeout {
		t.Errorf("proxy's connect timeout: %s", d)
	}
}

// rewrite-target: the backend gets the path the target makes of the regex
// route's groups, with the query kept.
func TestRewriteTarget(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.RequestURI())
	}))
	defer be.Close()
	p, srv := newProxy(t)
	re, err := route.CompileRegexPath("/api(/|$)(.*)")
	if err != nil {
		t.Fatal(err)
	}
	vh := route.NewTable()
	vh.Host("app.example.com").Add(&route.Route{Path: "/api(/|$)(.*)", Kind: route.Regex, Pattern: re, Backend: web, Source: "ns/rw",
		Policy: &route.Policy{RewriteTarget: "/v2/$2", Regex: true}})
	p.Swap(&Snapshot{Table: vh, Endpoints: map[route.Backend][]string{web: {strings.TrimPrefix(be.URL, "http://")}}})
	for path, want := range map[string]string{"/api/users/7?x=1": "/v2/users/7?x=1", "/API": "/v2/", "/api/a/../b": "/v2/b"} {
		if code, body := get(t, srv.URL+path, "app.example.com"); code != 200 || body != want {
			t.Errorf("%s: %d %q, want %q", path, code, body, want)
		}
	}
}

// A canary takes requests by header, then cookie, then weight.
func TestUseCanary(t *testing.T) {
	c := &route.Canary{CanaryRule: route.CanaryRule{Header: "X-Canary", Cookie: "beta", Weight: 30, WeightTotal: 100}}
	cv := &route.Canary{CanaryRule: route.CanaryRule{Header: "X-Canary", HeaderValue: "v2", WeightTotal: 100}}
	req := func(header, cookie string) *http.Request {
		r := httptest.NewRequest("GET", "/", nil)
		if header != "" {
			r.Header.Set("X-Canary", header)
		}
		if cookie != "" {
			r.AddCookie(&http.Cookie{Name: "beta", Value: cookie})
		}
		return r
	}
	low, high := func(int) int { return 0 }, func(n int) int { return n - 1 }
	for _, tc := range []struct {
		name   string
		c      *route.Canary
		r      *http.Request
		roll   func(int) int
		canary bool
	}{
		{"header always", c, req("always", "never"), high, true},
		{"header never beats cookie and weight", c, req("never", "always"), low, false},
		{"cookie always", c, req("", "always"), high, true},
		{"cookie never beats weight", c, req("", "never"), low, false},
		{"weight in", c, req("", ""), low, true},
		{"weight out", c, req("", ""), high, false},
		{"other header value falls through", c, req("maybe", ""), high, false},
		{"header value matches", cv, req("v2", ""), high, true},
		{"header value always is just a value", cv, req("always", ""), low, false},
	} {
		if got := useCanary(tc.r, tc.c, tc.roll); got != tc.canary {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.canary)
		}
	}
	// Through the proxy: 30 of 100 by weight, header and empty canary.
	main, canary := backend(t, "main"), backend(t, "canary")
	p, srv := newProxy(t)
	vh := route.NewTable()
	vh.Host("app.example.com").Add(&route.Route{Path: "/", Kind: route.Prefix, Backend: web, Source: "ns/main",
		Canary: &route.Canary{CanaryRule: route.CanaryRule{Header: "X-Canary", Weight: 30, WeightTotal: 100}, Backend: api, Source: "ns/canary"}})
	p.Swap(&Snapshot{Table: vh, Endpoints: map[route.Backend][]string{web: {main}, api: {canary}}})
	n := 0
	for i := 0; i < 400; i++ {
		if _, body := get(t, srv.URL+"/", "app.example.com"); strings.HasPrefix(body, "canary") {
			n++
		}
	}
	// 30 % of 400: 120; the binomial's spread is about 9, so 60–180 is
	// far outside chance and fails for 0 % or 100 %.
	if n < 60 || n > 180 {
		t.Errorf("%d of 400 requests went to the canary, want about 120", n)
	}
	if _, body := get(t, srv.URL+"/", "app.example.com", "X-Canary", "always"); !strings.HasPrefix(body, "canary") {
		t.Errorf("header always: %q", body)
	}
	p.Swap(&Snapshot{Table: vh, Endpoints: map[route.Backend][]string{web: {main}}})
	if _, body := get(t, srv.URL+"/", "app.example.com", "X-Canary", "always"); !strings.HasPrefix(body, "main") {
		t.Errorf("a canary without endpoints: %q, want the main backend", body)
	}
}

// custom-headers: the route's headers are set on the backend's response,
// replacing the backend's own.
func TestResponseHeaders(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Frame-Options", "ALLOWALL")
		io.WriteString(w, "ok")
	}))
	defer be.Close()
	p, srv := newProxy(t)
	vh := route.NewTable()
	vh.Host("app.example.com").Add(&route.Route{Path: "/", Kind: route.Prefix, Backend: web, Source: "ns/h",
		Policy: &route.Policy{ResponseHeaders: map[string]string{"X-Frame-Options": "DENY", "X-Team": "payments"}}})
	p.Swap(&Snapshot{Table: vh, Endpoints: map[route.Backend][]string{web: {strings.TrimPrefix(be.URL, "http://")}}})
	resp, _ := request(t, "GET", srv.URL+"/", "app.example.com")
	if v := resp.Header.Values("X-Frame-Options"); len(v) != 1 || v[0] != "DENY" || resp.Header.Get("X-Team") != "payments" {
		t.Errorf("headers %v", resp.Header)
	}
}

// backend-protocol HTTPS and GRPCS: the backend is reached over TLS, with
// HTTP/1.1 and HTTP/2.
func TestBackendTLS(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls=%v proto=%d", r.TLS != nil, r.ProtoMajor)
	})
	one := httptest.NewTLSServer(handler)
	defer one.Close()
	two := httptest.NewUnstartedServer(handler)
	two.EnableHTTP2 = true
	two.StartTLS()
	defer two.Close()
	p, srv := newProxy(t)
	vh := route.NewTable()
	add := func(path string, b route.Backend, pol *route.Policy) {
		vh.Host("app.example.com").Add(&route.Route{Path: path, Kind: route.Prefix, Backend: b, Source: "ns" + path, Policy: pol})
	}
	add("/https", web, &route.Policy{BackendTLS: true})
	add("/grpcs", api, &route.Policy{BackendTLS: true, H2C: true})
	add("/plain", web, nil)
	p.Swap(&Snapshot{Table: vh, Endpoints: map[route.Backend][]string{web: {strings.TrimPrefix(one.URL, "https://")},
		api: {strings.TrimPrefix(two.URL, "https://")}}})
	for path, want := range map[string]string{"/https": "tls=true proto=1", "/grpcs": "tls=true proto=2"} {
		if code, body := get(t, srv.URL+path, "app.example.com"); code != 200 || body != want {
			t.Errorf("%s: %d %q, want %q", path, code, body, want)
		}
	}
	// Plain HTTP to a TLS backend fails: the policy is what makes it work.
	if code, _ := get(t, srv.URL+"/plain", "app.example.com"); code == 200 {
		t.Errorf("plain HTTP to a TLS backend: %d", code)
	}
}
