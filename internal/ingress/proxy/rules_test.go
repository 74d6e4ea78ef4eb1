package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

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

// freePort is a TCP port on loopback nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestGatewayPortsIsolateListeners opens a Gateway's port when a snapshot
// names it, sends each request to the listener whose hostname fits best
// and to its routes alone, and closes the port when it goes.
func TestGatewayPortsIsolateListeners(t *testing.T) {
	p, _ := newProxy(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		p.RunPorts(ctx, "127.0.0.1", func() *http.Server { return &http.Server{ReadHeaderTimeout: 5 * time.Second} })
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	wild, exact := route.Backend{Namespace: "ns", Service: "wild", Port: 80}, route.Backend{Namespace: "ns", Service: "exact", Port: 80}
	listener := func(host, path string, b route.Backend) *route.Table {
		tb := route.NewTable()
		tb.DeepWildcards = true
		tb.Host(host).AddRule(route.Prefix, path, &route.Rule{Source: "HTTPRoute ns/" + b.Service, Backends: []route.WeightedBackend{{Backend: b, Weight: 1}}})
		return tb
	}
	port := freePort(t)
	p.Swap(&Snapshot{Table: route.NewTable(), Endpoints: map[route.Backend][]string{wild: {backendEcho(t, "wild")}, exact: {backendEcho(t, "exact")}},
		Ports: map[int]*Port{port: {Hostnames: []string{"*.example.com", "foo.example.com"},
			Tables: []*route.Table{listener("*.example.com", "/wild", wild), listener("foo.example.com", "/foo", exact)}}}})
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	var code int
	var body string
	for i := 0; i < 100; i++ { // the port opens after the swap
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body = get(t, url+"/wild", "bar.example.com"); code != 200 || !strings.HasPrefix(body, "wild ") {
		t.Errorf("bar.example.com/wild: %d %q", code, body)
	}
	if code, body = get(t, url+"/foo", "foo.example.com"); code != 200 || !strings.HasPrefix(body, "exact ") {
		t.Errorf("foo.example.com/foo: %d %q", code, body)
	}
	// Listener isolation: foo.example.com belongs to its own listener,
	// whose routes have no /wild.
	if code, _ = get(t, url+"/wild", "foo.example.com"); code != 404 {
		t.Errorf("foo.example.com/wild: %d, want 404 (the wildcard listener's route)", code)
	}
	if code, _ = get(t, url+"/wild", "other.test"); code != 404 {
		t.Errorf("other.test/wild: %d, want 404 (no listener takes the host)", code)
	}
	// The same port turned into an HTTPS listener (a Gateway's port given
	// to another): it serves TLS at once.
	certSrv := httptest.NewTLSServer(http.NotFoundHandler())
	certSrv.Close()
	p.Swap(&Snapshot{Table: route.NewTable(), Endpoints: map[route.Backend][]string{exact: {backendEcho(t, "exact")}},
		Ports: map[int]*Port{port: {Hostnames: []string{"foo.example.com"}, Tables: []*route.Table{listener("foo.example.com", "/foo", exact)},
			TLS: true, Certs: map[string]*tls.Certificate{"foo.example.com": &certSrv.TLS.Certificates[0]}}}})
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	var tlsErr error
	for i := 0; i < 100; i++ {
		req, _ := http.NewRequest("GET", fmt.Sprintf("https://127.0.0.1:%d/foo", port), nil)
		req.Host = "foo.example.com"
		var resp *http.Response
		if resp, tlsErr = insecure.Do(req); tlsErr == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				tlsErr = fmt.Errorf("status %d", resp.StatusCode)
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if tlsErr != nil {
		t.Errorf("the port reopened for TLS: %v", tlsErr)
	}
	p.Swap(&Snapshot{Table: route.NewTable()})
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			break
		}
		c.Close()
		if i == 100 {
			t.Fatal("the port stayed open after its Gateway went")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGatewayRetriesMirrorsAndBackendFilters: a rule's retry policy tries
// again on its codes up to its attempts; a mirror gets a copy; a
// backendRef's own header filters apply after the rule's.
func TestGatewayRetriesMirrorsAndBackendFilters(t *testing.T) {
	p, f := newProxy(t)
	var mu sync.Mutex
	failures, mirrored := 0, make(chan string, 10)
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if failures > 0 {
			failures--
			w.WriteHeader(500)
			return
		}
		fmt.Fprintf(w, "ok x-backend=%s", r.Header.Get("X-Backend"))
	}))
	t.Cleanup(flaky.Close)
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { mirrored <- r.URL.Path }))
	t.Cleanup(mirror.Close)
	fb, mb := route.Backend{Namespace: "ns", Service: "flaky", Port: 80}, route.Backend{Namespace: "ns", Service: "mirror", Port: 80}
	tb := route.NewTable()
	tb.DeepWildcards = true
	vh := tb.Host("")
	wb := []route.WeightedBackend{{Backend: fb, Weight: 1, RequestHeaders: &route.HeaderChanges{Set: []route.Header{{Name: "X-Backend", Value: "flaky"}}},
		ResponseHeaders: &route.HeaderChanges{Set: []route.Header{{Name: "X-From", Value: "flaky"}}}}}
	vh.AddRule(route.Prefix, "/retry2", &route.Rule{Source: "HTTPRoute ns/r", Backends: wb,
		Filters: route.Filters{Retry: &route.Retry{Codes: map[int]bool{500: true}, Attempts: 2}}})
	vh.AddRule(route.Prefix, "/mirror", &route.Rule{Source: "HTTPRoute ns/m", Backends: wb,
		Filters: route.Filters{Mirrors: []route.Mirror{{Backend: mb, Percent: 100}}}})
	p.Swap(&Snapshot{Table: tb, Endpoints: map[route.Backend][]string{fb: {strings.TrimPrefix(flaky.URL, "http://")}, mb: {strings.TrimPrefix(mirror.URL, "http://")}}})
	setFailures := func(n int) { mu.Lock(); failures = n; mu.Unlock() }

	setFailures(2)
	resp, body := request(t, "GET", f.URL+"/retry2", "any.test")
	if resp.StatusCode != 200 || body != "ok x-backend=flaky" || resp.Header.Get("X-From") != "flaky" {
		t.Errorf("two failures, two retries allowed: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	setFailures(3)
	if code, _ := get(t, f.URL+"/retry2", "any.test"); code != 500 {
		t.Errorf("three failures, two retries allowed: %d, want 500", code)
	}
	setFailures(1)
	if code, _ := get(t, f.URL+"/mirror/x", "any.test"); code != 500 {
		t.Errorf("no retry policy: %d, want the backend's 500", code)
	}
	select {
	case path := <-mirrored:
		if path != "/mirror/x" {
			t.Errorf("mirror got %s", path)
		}
	case <-time.After(5 * time.Second):
		t.Error("the mirror got no copy")
	}
}

// TestTLSRoutesBySNI: a port of TLS listeners sends each connection to
// the backend of the route its server name picks: unread (passthrough;
// the client sees the backend's own certificate) or decrypted with the
// listener's certificate (terminate); an unknown name gets nothing.
func TestTLSRoutesBySNI(t *testing.T) {
	p, _ := newProxy(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.RunPorts(ctx, "127.0.0.1", func() *http.Server { return &http.Server{} }); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	backendTLS := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "from the backend") }))
	t.Cleanup(backendTLS.Close)
	b := route.Backend{Namespace: "ns", Service: "tls", Port: 443}
	tb := route.NewTable()
	tb.DeepWildcards = true
	tb.Host("abc.example.com").AddRule(route.Prefix, "/", &route.Rule{Source: "TLSRoute ns/t", Backends: []route.WeightedBackend{{Backend: b, Weight: 1}}})
	plain := route.Backend{Namespace: "ns", Service: "plain", Port: 3000}
	tp := route.NewTable()
	tp.Host("plain.test").AddRule(route.Prefix, "/", &route.Rule{Source: "TLSRoute ns/p", Backends: []route.WeightedBackend{{Backend: plain, Weight: 1}}})
	ours := issue(t, "terminating listener", nil)
	port := freePort(t)
	p.Swap(&Snapshot{Table: route.NewTable(), Endpoints: map[route.Backend][]string{b: {strings.TrimPrefix(backendTLS.URL, "https://")}, plain: {backendEcho(t, "plain")}},
		Ports: map[int]*Port{port: {Hostnames: []string{"*.example.com", "plain.test"}, Tables: []*route.Table{tb, tp}, Stream: true,
			Terminate: []bool{false, true}, Certs: map[string]*tls.Certificate{"plain.test": &ours}}}})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dial := func(sni string) (*tls.Conn, error) {
		var c *tls.Conn
		var err error
		for i := 0; i < 100; i++ {
			c, err = tls.Dial("tcp", addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
			if err == nil || !strings.Contains(err.Error(), "refused") {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		return c, err
	}
	c, err := dial("abc.example.com")
	if err != nil {
		t.Fatalf("abc.example.com: %v", err)
	}
	if !c.ConnectionState().PeerCertificates[0].Equal(backendTLS.Certificate()) {
		t.Error("the client did not get the backend's own certificate")
	}
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: abc.example.com\r\nConnection: close\r\n\r\n")
	reply, _ := io.ReadAll(c)
	c.Close()
	if !strings.HasSuffix(string(reply), "from the backend") {
		t.Errorf("reply %q", reply)
	}
	if c, err := dial("other.example.com"); err == nil {
		c.Close()
		t.Error("a name no route takes got a TLS session")
	}
	c, err = dial("plain.test")
	if err != nil {
		t.Fatalf("plain.test: %v", err)
	}
	if !c.ConnectionState().PeerCertificates[0].Equal(ours.Leaf) {
		t.Error("the terminating listener did not show its certificate")
	}
	fmt.Fprint(c, "GET /x HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n")
	reply, _ = io.ReadAll(c)
	c.Close()
	if !strings.Contains(string(reply), "plain host=plain.test path=/x") {
		t.Errorf("terminated reply %q", reply)
	}
}

// TestHTTPSPortAnswersMisdirectedRequests: on an HTTPS port, a request
// whose host goes to another listener than its connection's TLS server
// name gets 421; the same listener's hosts are served.
func TestHTTPSPortAnswersMisdirectedRequests(t *testing.T) {
	p, _ := newProxy(t)
	foo, wild := route.Backend{Namespace: "ns", Service: "foo", Port: 80}, route.Backend{Namespace: "ns", Service: "wild", Port: 80}
	listener := func(host string, b route.Backend) *route.Table {
		tb := route.NewTable()
		tb.DeepWildcards = true
		tb.Host(host).AddRule(route.Prefix, "/", &route.Rule{Source: "HTTPRoute ns/" + b.Service, Backends: []route.WeightedBackend{{Backend: b, Weight: 1}}})
		return tb
	}
	const port = 8443
	p.Swap(&Snapshot{Table: route.NewTable(), Endpoints: map[route.Backend][]string{foo: {backendEcho(t, "foo")}, wild: {backendEcho(t, "wild")}},
		Ports: map[int]*Port{port: {Hostnames: []string{"*.example.com", "foo.example.com"},
			Tables: []*route.Table{listener("*.example.com", wild), listener("foo.example.com", foo)}, TLS: true}}})
	for _, c := range []struct {
		sni, host string
		want      int
	}{
		{"foo.example.com", "foo.example.com", 200},
		{"bar.example.com", "baz.example.com", 200}, // one listener
		{"bar.example.com", "foo.example.com", 421},
		{"foo.example.com", "bar.example.com", 421},
		{"", "foo.example.com", 200}, // no server name: the host decides
	} {
		r := httptest.NewRequest("GET", "https://"+c.host+"/", nil)
		r.TLS = &tls.ConnectionState{ServerName: c.sni}
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}))
		w := httptest.NewRecorder()
		p.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("server name %q, host %q: %d, want %d", c.sni, c.host, w.Code, c.want)
		}
	}
}

// TestGatewayRetriesConnectionErrorsAndTimeouts: a rule with a retry
// policy tries again when the backend drops the connection or its
// backend timeout passes, up to its attempts; without a policy the
// failure is the client's answer.
func TestGatewayRetriesConnectionErrorsAndTimeouts(t *testing.T) {
	p, f := newProxy(t)
	var mu sync.Mutex
	drops, slow := 0, 0
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		drop, wait := drops > 0, slow > 0
		if drop {
			drops--
		} else if wait {
			slow--
		}
		mu.Unlock()
		switch {
		case drop:
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
			return
		case wait:
			time.Sleep(2 * time.Second)
		}
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(backend.Close)
	// No connection is ever reused: net/http's own retry of a request
	// whose reused connection broke must not stand in for the policy's.
	backend.Config.SetKeepAlivesEnabled(false)
	b := route.Backend{Namespace: "ns", Service: "b", Port: 80}
	tb := route.NewTable()
	vh := tb.Host("")
	wb := []route.WeightedBackend{{Backend: b, Weight: 1}}
	vh.AddRule(route.Prefix, "/retry", &route.Rule{Source: "HTTPRoute ns/r", Backends: wb,
		Filters: route.Filters{Retry: &route.Retry{Codes: map[int]bool{}, Attempts: 2}, BackendTimeout: 200 * time.Millisecond}})
	vh.AddRule(route.Prefix, "/plain", &route.Rule{Source: "HTTPRoute ns/p", Backends: wb,
		Filters: route.Filters{BackendTimeout: 200 * time.Millisecond}})
	p.Swap(&Snapshot{Table: tb, Endpoints: map[route.Backend][]string{b: {strings.TrimPrefix(backend.URL, "http://")}}})
	set := func(d, s int) { mu.Lock(); drops, slow = d, s; mu.Unlock() }
	for _, c := range []struct {
		name        string
		path        string
		drops, slow int
		want        int
	}{
		{"two drops, two retries", "/retry", 2, 0, 200},
		{"three drops, two retries", "/retry", 3, 0, 502},
		{"a slow answer, retried", "/retry", 0, 1, 200},
		{"a drop, no policy", "/plain", 1, 0, 502},
		{"a slow answer, no policy", "/plain", 0, 1, 504},
	} {
		set(c.drops, c.slow)
		if code, body := get(t, f.URL+c.path, "any.test"); code != c.want {
			t.Errorf("%s: %d %q, want %d", c.name, code, body, c.want)
		}
	}
}

// TestIdempotentRequestsGoToTheNextEndpointOnError: as nginx's default
// proxy_next_upstream, a GET whose endpoint drops the connection before
// answering (its pod stopping) is sent once to the next endpoint; a POST
// is not, nor a GET with nowhere else to go.
func TestIdempotentRequestsGoToTheNextEndpointOnError(t *testing.T) {
	p, f := newProxy(t)
	var mu sync.Mutex
	dropped := 0
	dropping := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		dropped++
		mu.Unlock()
		c, _, _ := w.(http.Hijacker).Hijack()
		c.Close()
	}))
	t.Cleanup(dropping.Close)
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	t.Cleanup(good.Close)
	for _, s := range []*httptest.Server{dropping, good} {
		s.Config.SetKeepAlivesEnabled(false) // net/http's own retry on a reused connection must not stand in
	}
	two, one := route.Backend{Namespace: "ns", Service: "two", Port: 80}, route.Backend{Namespace: "ns", Service: "one", Port: 80}
	tb := route.NewTable()
	tb.Host("two.test").Add(&route.Route{Path: "/", Kind: route.Prefix, Backend: two, Source: "ns/two"})
	tb.Host("one.test").Add(&route.Route{Path: "/", Kind: route.Prefix, Backend: one, Source: "ns/one"})
	// A Gateway API rule without a retry policy: served off the fast path.
	tb.Host("rule.test").AddRule(route.Prefix, "/", &route.Rule{Source: "HTTPRoute ns/r", Backends: []route.WeightedBackend{{Backend: two, Weight: 1}}})
	p.Swap(&Snapshot{Table: tb, Endpoints: map[route.Backend][]string{
		two: {strings.TrimPrefix(dropping.URL, "http://"), strings.TrimPrefix(good.URL, "http://")},
		one: {strings.TrimPrefix(dropping.URL, "http://")}}})
	for _, host := range []string{"two.test", "rule.test"} {
		for i := 0; i < 6; i++ { // round-robin: both endpoints come first in turn
			if code, body := get(t, f.URL+"/", host); code != 200 || body != "ok" {
				t.Fatalf("GET %d to %s: %d %q, want the next endpoint's answer", i, host, code, body)
			}
		}
	}
	mu.Lock()
	if dropped == 0 {
		t.Error("the dropping endpoint was never tried")
	}
	mu.Unlock()
	failed := 0
	for i := 0; i < 6; i++ {
		if resp, _ := request(t, "POST", f.URL+"/", "two.test"); resp.StatusCode == 502 {
			failed++
		}
	}
	if failed == 0 {
		t.Error("a POST went to another endpoint after its own dropped it")
	}
	if code, _ := get(t, f.URL+"/", "one.test"); code != 502 {
		t.Errorf("GET with one endpoint: %d, want 502", code)
	}
}
