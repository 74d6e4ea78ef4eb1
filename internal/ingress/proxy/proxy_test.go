package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"weft.dev/weft/internal/ingress/accesslog"
	"weft.dev/weft/internal/ingress/route"
)

// backend is a test Service endpoint that answers with its name and what
// it was sent.
func backend(t *testing.T, name string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "websocket" {
			echoUpgrade(w)
			return
		}
		fmt.Fprintf(w, "%s host=%s xff=%s proto=%s path=%s", name, r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"), r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// echoUpgrade switches protocols and echoes lines, as a WebSocket server
// would frames.
func echoUpgrade(w http.ResponseWriter) {
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	rw.Flush()
	for {
		line, err := rw.ReadString('\n')
		if err != nil {
			return
		}
		rw.WriteString("echo " + line)
		rw.Flush()
	}
}

func table(routes map[string]route.Backend) *route.Table {
	t := route.NewTable()
	for p, b := range routes {
		t.Host("app.example.com").Add(&route.Route{Path: p, Kind: route.Prefix, Backend: b, Source: "ns/" + b.Service})
	}
	return t
}

var (
	web = route.Backend{Namespace: "ns", Service: "web", Port: 80}
	api = route.Backend{Namespace: "ns", Service: "api", Port: 80}
)

func get(t *testing.T, url, host string, hdr ...string) (int, string) {
	t.Helper()
	resp, body := request(t, "GET", url, host, hdr...)
	return resp.StatusCode, body
}

// request sends one request with the given Host and headers (name, value
// pairs) and returns the response and its body.
func request(t *testing.T, method, url, host string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// front is the proxy's plain-HTTP listener as weft ingress runs it: the
// fast path, net/http behind it.
type front struct{ URL string }

func newProxy(t testing.TB) (*Proxy, *front) {
	cfg := DefaultConfig()
	cfg.NoEventLoop = goroutinePerConn
	p := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	return p, serve(t, p)
}

// goroutinePerConn makes newProxy's proxies serve without event loops
// (TestGoroutinePerConnection).
var goroutinePerConn bool

func serve(t testing.TB, p *Proxy) *front {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	slow := &http.Server{Handler: p, Protocols: protocols, ReadHeaderTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, l, slow) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		_ = slow.Close()
	})
	return &front{URL: "http://" + l.Addr().String()}
}

func TestRoutesForwardAndSetForwardedHeaders(t *testing.T) {
	p, srv := newProxy(t)
	p.Swap(&Snapshot{Table: table(map[string]route.Backend{"/": web, "/api": api}),
		Endpoints: map[route.Backend][]string{web: {backend(t, "web-1")}, api: {backend(t, "api-1")}}})
	code, body := get(t, srv.URL+"/api/v1", "app.example.com", "X-Forwarded-For", "6.6.6.6")
	if code != 200 || !strings.HasPrefix(body, "api-1 host=app.example.com xff=127.0.0.1 proto=http path=/api/v1") {
		t.Errorf("/api/v1: %d %q (a client's own X-Forwarded-For must not pass)", code, body)
	}
	if code, body := get(t, srv.URL+"/", "app.example.com"); code != 200 || !strings.HasPrefix(body, "web-1") {
		t.Errorf("/: %d %q", code, body)
	}
	if code, _ := get(t, srv.URL+"/", "unknown.example.com"); code != 404 {
		t.Errorf("unknown host: %d, want 404", code)
	}
}

func TestNoEndpointsIs503AndDeadEndpointsAreSkipped(t *testing.T) {
	p, srv := newProxy(t)
	dead := "127.0.0.1:1" // nothing listens on port 1
	p.Swap(&Snapshot{Table: table(map[string]route.Backend{"/": web, "/api": api}),
		Endpoints: map[route.Backend][]string{web: {dead, backend(t, "web-1"), dead}}})
	for i := 0; i < 6; i++ {
		if code, body := get(t, srv.URL+"/", "app.example.com"); code != 200 || !strings.HasPrefix(body, "web-1") {
			t.Fatalf("request %d with a dead endpoint beside a live one: %d %q", i, code, body)
		}
	}
	if code, _ := get(t, srv.URL+"/api", "app.example.com"); code != 503 {
		t.Errorf("backend without endpoints: %d, want 503", code)
	}
}

func TestBodyLimit(t *testing.T) {
	p, srv := newProxy(t)
	p.cfg.MaxBodyBytes = 10
	p.Swap(&Snapshot{Table: table(map[string]route.Backend{"/": web}), Endpoints: map[route.Backend][]string{web: {backend(t, "web-1")}}})
	req, _ := http.NewRequest("POST", srv.URL+"/", strings.NewReader(strings.Repeat("x", 11)))
	req.Host = "app.example.com"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("11-byte body over a 10-byte limit: %d, want 413", resp.StatusCode)
	}
}

// Swapping the snapshot while requests run and a WebSocket is open drops
// nothing: every request is answered 200, the WebSocket keeps echoing.
func TestSwapDropsNothing(t *testing.T) {
	p, srv := newProxy(t)
	web1, web2 := backend(t, "web-1"), backend(t, "web-2")
	snap := func(i int) *Snapshot {
		eps := []string{web1}
		if i%2 == 1 {
			eps = []string{web2, web1}
		}
		return &Snapshot{Table: table(map[string]route.Backend{"/": web, fmt.Sprintf("/v%d", i): api}),
			Endpoints: map[route.Backend][]string{web: eps, api: {web2}}}
	}
	p.Swap(snap(0))
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: app.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(conn)
	status, _ := br.ReadString('\n')
	if !strings.Contains(status, "101") {
		t.Fatalf("upgrade through the proxy: %q", status)
	}
	for line, _ := br.ReadString('\n'); line != "\r\n"; line, _ = br.ReadString('\n') {
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var failed, ok int
	var mu sync.Mutex
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", srv.URL+"/", nil)
				req.Host = "app.example.com"
				resp, err := http.DefaultClient.Do(req)
				mu.Lock()
				if err != nil || resp.StatusCode != 200 {
					failed++
				} else {
					ok++
				}
				mu.Unlock()
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	for i := 1; i <= 200; i++ {
		p.Swap(snap(i))
		if i%50 == 0 {
			fmt.Fprintf(conn, "ping %d\n", i)
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if line, err := br.ReadString('\n'); err != nil || line != fmt.Sprintf("echo ping %d\n", i) {
				t.Errorf("WebSocket after %d swaps: %q %v", i, line, err)
			}
		}
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if failed != 0 || ok == 0 {
		t.Errorf("%d requests failed across 200 swaps (%d succeeded)", failed, ok)
	}
}

// Requests are counted per Ingress and code, refused connections per
// Ingress.
func TestMetricsPerIngress(t *testing.T) {
	p, srv := newProxy(t)
	p.Swap(&Snapshot{Table: table(map[string]route.Backend{"/": web, "/api": api}),
		Endpoints: map[route.Backend][]string{web: {"127.0.0.1:1", backend(t, "web-1")}}})
	get(t, srv.URL+"/", "app.example.com")
	get(t, srv.URL+"/", "app.example.com")
	get(t, srv.URL+"/api", "app.example.com")
	get(t, srv.URL+"/", "other.example.com")
	for _, c := range []struct {
		what string
		c    prometheus.Counter
		want float64
	}{
		{"ns/web 200", p.metrics.requests.WithLabelValues("ns/web", "200"), 2},
		{"ns/api 503", p.metrics.requests.WithLabelValues("ns/api", "503"), 1},
		{"none 404", p.metrics.requests.WithLabelValues("none", "404"), 1},
		{"ns/web refused", p.metrics.upstream.WithLabelValues("ns/web", "refused"), 1},
	} {
		var m dto.Metric
		if err := c.c.Write(&m); err != nil {
			t.Fatal(err)
		}
		if got := m.GetCounter().GetValue(); got != c.want {
			t.Errorf("%s: %v, want %v", c.what, got, c.want)
		}
	}
}

// A backend marked h2c gets HTTP/2 without TLS, as gRPC servers expect:
// the proxy streams its response as it comes and passes its trailers on,
// to a client that itself speaks h2c to the proxy.
func TestH2CBackendStreamsWithTrailers(t *testing.T) {
	grpcLike := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		fmt.Fprintf(w, "proto=%d\n", r.ProtoMajor)
		http.NewResponseController(w).Flush()
		time.Sleep(50 * time.Millisecond)
		fmt.Fprintf(w, "second\n")
		w.Header().Set("Grpc-Status", "0")
	}))
	grpcLike.Config.Protocols = new(http.Protocols)
	grpcLike.Config.Protocols.SetUnencryptedHTTP2(true)
	grpcLike.Start()
	t.Cleanup(grpcLike.Close)
	p, front := newProxy(t)
	p.Swap(&Snapshot{Table: table(map[string]route.Backend{"/": web}),
		Endpoints: map[route.Backend][]string{web: {strings.TrimPrefix(grpcLike.URL, "http://")}}, H2C: map[route.Backend]bool{web: true}})
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	req, _ := http.NewRequest("POST", front.URL+"/pkg.Service/Method", strings.NewReader("req"))
	req.Host = "app.example.com"
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	first, _ := br.ReadString('\n')
	if resp.ProtoMajor != 2 || first != "proto=2\n" {
		t.Fatalf("client saw HTTP/%d, backend said %q; want HTTP/2 on both sides", resp.ProtoMajor, first)
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "second\n" || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Errorf("rest %q, trailers %v: want the second message and Grpc-Status 0", rest, resp.Trailer)
	}
}

// BenchmarkProxyKeepAlive: keep-alive GETs through the proxy to one
// backend (for profiles; no threshold: the machines are shared).
func BenchmarkProxyKeepAlive(b *testing.B) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "web-1") }))
	defer be.Close()
	p, srv := newProxy(b)
	p.Swap(&Snapshot{Table: table(map[string]route.Backend{"/": web}), Endpoints: map[route.Backend][]string{web: {strings.TrimPrefix(be.URL, "http://")}}})
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	client := &http.Client{Transport: tr}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", srv.URL+"/hostname", nil)
			req.Host = "app.example.com"
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// A route's policy: source ranges, redirects, the HTTPS redirect, the app
// root, its own body limit, and the Host and X-Forwarded-Prefix sent.
func TestRoutePolicies(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "host=%s prefix=%s", r.Host, r.Header.Get("X-Forwarded-Prefix"))
	}))
	defer be.Close()
	p, srv := newProxy(t)
	vh := route.NewTable()
	add := func(path string, pol *route.Policy) {
		vh.Host("app.example.com").Add(&route.Route{Path: path, Kind: route.Prefix, Backend: web, Source: "ns/" + path, Policy: pol})
	}
	lo := netip.MustParsePrefix("127.0.0.0/8")
	add("/", &route.Policy{AppRoot: "/app"})
	add("/app", nil)
	add("/allowed", &route.Policy{Allow: []netip.Prefix{lo}})
	add("/other-net", &route.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	add("/denied", &route.Policy{Allow: []netip.Prefix{lo}, Deny: []netip.Prefix{lo}})
	add("/moved", &route.Policy{Redirect: &route.Redirect{Code: 301, Location: "https://new.example.com/"}})
	add("/secure", &route.Policy{HTTPSRedirect: true})
	add("/small", &route.Policy{MaxBodyBytes: 1024})
	add("/big", &route.Policy{UnlimitedBody: true})
	add("/vhost", &route.Policy{Host: "internal.example", ForwardedPrefix: "/api"})
	p.Swap(&Snapshot{Table: vh, Endpoints: map[route.Backend][]string{web: {strings.TrimPrefix(be.URL, "http://")}}})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path string, body int) (int, string, string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(strings.Repeat("x", body)))
		req.Host = "app.example.com"
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Location"), strings.TrimSpace(string(b))
	}
	cases := []struct {
		method, path string
		body         int
		code         int
		loc, bodyHas string
	}{
		{"GET", "/", 0, 302, "http://app.example.com/app", ""}, // absolute, as nginx writes it
		{"GET", "/app", 0, 200, "", "host=app.example.com"},
		{"GET", "/allowed", 0, 200, "", "host="},
		{"GET", "/other-net", 0, 403, "", "forbidden"},
		{"GET", "/denied", 0, 403, "", "forbidden"},
		{"GET", "/moved/x", 0, 301, "https://new.example.com/", ""},
		{"GET", "/secure/x?y=1", 0, 308, "https://app.example.com/secure/x?y=1", ""},
		{"POST", "/small", 2048, 413, "", ""},
		{"POST", "/small", 512, 200, "", "host="},
		{"POST", "/big", 2 << 20, 200, "", "host="}, // over the proxy's 1 MiB default
		{"POST", "/app", 2 << 20, 413, "", ""},
		{"GET", "/vhost", 0, 200, "", "host=internal.example prefix=/api"},
	}
	for _, c := range cases {
		code, loc, body := do(c.method, c.path, c.body)
		if code != c.code || loc != c.loc || !strings.Contains(body, c.bodyHas) {
			t.Errorf("%s %s (%d bytes): %d %q %q, want %d %q containing %q", c.method, c.path, c.body, code, loc, body, c.code, c.loc, c.bodyHas)
		}
	}
}

// Each answer is counted under its route and code, and timed, on both
// the fast path and net/http's; access records go to the access log.
func TestMetricsAndAccessRecordsPerRoute(t *testing.T) {
	var records lockedBuffer
	cfg := DefaultConfig()
	cfg.AccessLog = accesslog.New(&records, "ingress-proxy")
	p := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	srv := serve(t, p)
	p.Swap(&Snapshot{Table: table(map[string]route.Backend{"/": web, "/api": api}),
		Endpoints: map[route.Backend][]string{web: {backend(t, "web-1")}}})
	for range 3 {
		get(t, srv.URL+"/", "app.example.com")
	}
	get(t, srv.URL+"/api", "app.example.com")
	get(t, srv.URL+"/", "unknown.example.com")
	p.Swap(&Snapshot{Table: table(map[string]route.Backend{"/": web, "/api": api})})
	get(t, srv.URL+"/", "app.example.com")
	// A request is counted and recorded after its response is sent.
	want := map[[2]string]float64{{"ns/web", "200"}: 3, {"ns/api", "503"}: 1, {"none", "404"}: 1, {"ns/web", "503"}: 1, {"ns/web", "404"}: 0}
	var got map[[2]string]float64
	var lines int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		got = map[[2]string]float64{}
		for k := range want {
			got[k] = promtestutil.ToFloat64(p.metrics.requests.WithLabelValues(k[0], k[1]))
		}
		lines = strings.Count(records.String(), "msg=request component=ingress-proxy method=GET host=app.example.com path=/ status=200 ")
		if fmt.Sprint(got) == fmt.Sprint(want) && lines == 3 {
			break
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("requests by route and code %v, want %v", got, want)
	}
	if lines != 3 {
		t.Errorf("access records for / with 200: %d, want 3 in:\n%s", lines, records.String())
	}
	if n := promtestutil.CollectAndCount(p.metrics.duration); n != 3 {
		t.Errorf("duration series %d, want 3 (web, api, none)", n)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}
func (b *lockedBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.buf.String() }
