// Package proxy is weft ingress's HTTP proxy: it serves the current route
// snapshot, which the controller swaps whole on every change (an atomic
// pointer: no reload, no dropped connection), and forwards each request to
// an endpoint of its backend Service taken from EndpointSlices, over
// pooled keep-alive connections.
package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"weft.dev/weft/internal/ingress/accesslog"
	"weft.dev/weft/internal/ingress/route"
)

// Snapshot is everything a request needs: routes and each backend's
// endpoints ("ip:port", ready ones).
type Snapshot struct {
	Table     *route.Table
	Endpoints map[route.Backend][]string
	// H2C marks backends that speak HTTP/2 without TLS (the Service
	// port's appProtocol kubernetes.io/h2c or grpc): gRPC's.
	H2C map[route.Backend]bool
	// Ports are the Gateway listeners' ports on the proxy, by number.
	Ports map[int]*Port
}

// Port is a Gateway's listener port on the proxy: a request goes to the
// listener whose hostname fits its host best and is served by the routes
// of that listener alone (listener isolation).
type Port struct {
	Hostnames []string       // each listener's ("" for any)
	Tables    []*route.Table // each listener's routes
	// TLS: HTTPS; certificates by host in Certs.
	TLS   bool
	Certs map[string]*tls.Certificate
	// ClientCAs: clients must show a certificate these sign; with
	// ClientCertOptional any client is let in (AllowInsecureFallback).
	ClientCAs          *x509.CertPool
	ClientCertOptional bool
	// Stream: TLS listeners, whose TLSRoutes take whole connections,
	// chosen by the ClientHello's server name: passed through as they
	// are, or, for the listeners marked in Terminate, decrypted here with
	// the listener's certificate in Certs.
	Stream    bool
	Terminate []bool
}

// Config holds the proxy's limits.
type Config struct {
	MaxBodyBytes int64         // request bodies above this get 413 (0: no limit)
	DialTimeout  time.Duration // per endpoint
	// EjectFor keeps an endpoint that refused a connection out of
	// rotation this long (unless every endpoint is out).
	EjectFor time.Duration
	// AccessLog takes a record per request (nil: none are kept).
	AccessLog *accesslog.Log
	// NoEventLoop serves each plain-listener connection in a goroutine
	// of its own instead of on event loops (Serve).
	NoEventLoop bool
}

// DefaultConfig is ingress-nginx's defaults where it has them.
func DefaultConfig() Config {
	return Config{MaxBodyBytes: 1 << 20, DialTimeout: 5 * time.Second, EjectFor: 10 * time.Second}
}

// Proxy is an http.Handler.
type Proxy struct {
	cfg  Config
	log  *slog.Logger
	snap atomic.Pointer[Snapshot]
	// One reverse proxy per way of reaching a backend: HTTP/1.1, h2c,
	// HTTP/1.1 over TLS, HTTP/2 over TLS.
	rp, h2c, overTLS, h2OverTLS *httputil.ReverseProxy
	// upTLS: the transports of backends BackendTLSPolicies cover.
	upTLS   tlsTransports
	next    atomic.Uint64
	mu      sync.Mutex
	ejected map[string]time.Time
	metrics *metrics
	up      upstreams // the fast path's backend connections
	mirrors *http.Client
	swapped chan struct{}
}

type ctxKey struct{}

// pick is what ServeHTTP chose for the transport: the endpoints to try.
type pick struct {
	backend route.Backend
	source  string // the Ingress, for metrics
	addrs   []string
	policy  *route.Policy  // nil: none
	pinned  string         // the endpoint the affinity cookie names, if any
	path    string         // the route's path (the affinity cookie's default)
	pattern *regexp.Regexp // a regex route's (rewrite-target's groups)
	tls     bool           // the client came over TLS
	rule    *route.Rule    // a Gateway API rule's (nil: an Ingress route)
	wb      *route.WeightedBackend
}

// New returns a proxy serving an empty snapshot (every request 404); its
// metrics go to reg (nil: none).
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) *Proxy {
	p := &Proxy{cfg: cfg, log: log, ejected: map[string]time.Time{}, metrics: newMetrics(reg), up: upstreams{idle: map[string][]*upConn{}},
		swapped: make(chan struct{}, 1)}
	p.snap.Store(&Snapshot{Table: route.NewTable()})
	transport := func(h2, tlsOn bool) *http.Transport {
		t := &http.Transport{
			Proxy:                 nil, // never an environment proxy
			DialContext:           p.dial,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
			TLSHandshakeTimeout:   cfg.DialTimeout,
		}
		switch {
		case h2 && !tlsOn:
			t.Protocols = new(http.Protocols)
			t.Protocols.SetUnencryptedHTTP2(true) // prior knowledge, as gRPC servers expect
		case tlsOn:
			// As nginx's default (proxy_ssl_verify off): the backend's
			// certificate is not checked; the link is encrypted.
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
			t.Protocols = new(http.Protocols)
			if h2 {
				t.Protocols.SetHTTP2(true) // gRPC over TLS
			} else {
				t.Protocols.SetHTTP1(true)
			}
		}
		return t
	}
	rewrite := func(pr *httputil.ProxyRequest) {
		// Inbound X-Forwarded-* were dropped: only our own are sent.
		pr.SetXForwarded()
		pr.Out.URL.Scheme = "http"
		pr.Out.Host = pr.In.Host
		if pk, _ := pr.In.Context().Value(ctxKey{}).(*pick); pk != nil && ((pk.policy != nil && pk.policy.BackendTLS) || (pk.wb != nil && pk.wb.TLS != nil)) {
			pr.Out.URL.Scheme = "https"
		}
		if pk, _ := pr.In.Context().Value(ctxKey{}).(*pick); pk != nil && pk.rule != nil {
			applyRule(pr, pk.rule, pk.wb, pk.path)
		}
		if pk, _ := pr.In.Context().Value(ctxKey{}).(*pick); pk != nil && pk.policy != nil {
			if pk.policy.Host != "" {
				pr.Out.Host = pk.policy.Host
			}
			if pk.policy.ForwardedPrefix != "" {
				pr.Out.Header.Set("X-Forwarded-Prefix", pk.policy.ForwardedPrefix)
			}
			if pk.policy.RewriteTarget != "" {
				pr.Out.URL.Path = route.Rewrite(pk.policy.RewriteTarget, pk.pattern, route.CleanPath(pr.In.URL.Path))
				pr.Out.URL.RawPath = ""
			}
		}
	}
	p.mirrors = &http.Client{Transport: transport(false, false), Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	p.rp = &httputil.ReverseProxy{Rewrite: rewrite, Transport: &retrying{p: p, base: transport(false, false)}, ErrorHandler: p.upstreamError,
		ModifyResponse: onResponse}
	// Streams (gRPC) are flushed as they come, trailers passed on.
	p.h2c = &httputil.ReverseProxy{Rewrite: rewrite, Transport: &retrying{p: p, base: transport(true, false)}, ErrorHandler: p.upstreamError,
		ModifyResponse: onResponse, FlushInterval: -1}
	p.overTLS = &httputil.ReverseProxy{Rewrite: rewrite, Transport: &retrying{p: p, base: transport(false, true)}, ErrorHandler: p.upstreamError,
		ModifyResponse: onResponse}
	p.h2OverTLS = &httputil.ReverseProxy{Rewrite: rewrite, Transport: &retrying{p: p, base: transport(true, true)}, ErrorHandler: p.upstreamError,
		ModifyResponse: onResponse, FlushInterval: -1}
	return p
}

// Swap makes s the snapshot every new request sees; requests in flight
// finish with the one they started with.
func (p *Proxy) Swap(s *Snapshot) {
	p.snap.Store(s)
	select {
	case p.swapped <- struct{}{}:
	default:
	}
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s := p.snap.Load()
	var backend *route.Backend
	var pol *route.Policy
	var rule *route.Rule
	source, path := "none", "/"
	var pattern *regexp.Regexp
	table, misdirected := s.tableFor(r)
	if rt, x, ok := table.MatchRequest(r); ok {
		backend, source, pol, path, pattern, rule = &rt.Backend, rt.Source, rt.Policy, rt.Path, rt.Pattern, x
		if pattern != nil {
			path = "/" // a regex is no cookie path
		}
		if c := rt.Canary; c != nil && len(s.Endpoints[c.Backend]) > 0 && useCanary(r, c, rand.IntN) {
			backend, source = &c.Backend, c.Source
		}
	} else if table.Default != nil {
		backend, source = table.Default, "default"
	}
	status := 0
	defer func() {
		took := time.Since(start)
		p.metrics.observe(source, status, took.Seconds())
		p.cfg.AccessLog.Write(&accesslog.Record{Method: []byte(r.Method), Host: []byte(r.Host), Path: []byte(r.URL.Path), Status: status,
			Client: r.RemoteAddr, Ingress: source, Took: took})
	}()
	if misdirected {
		status, source = http.StatusMisdirectedRequest, "misdirected"
		http.Error(w, "misdirected request: the connection's TLS server name is for another listener", status)
		return
	}
	var wb *route.WeightedBackend
	if rule != nil {
		source = rule.Source
		if wb, pol, status = answerByRule(w, r, rule, path); status != 0 {
			return
		}
		backend = &wb.Backend
		p.mirror(s, r, rule)
	}
	if backend == nil {
		status = http.StatusNotFound
		http.Error(w, "no route", status)
		return
	}
	if pol != nil {
		if status = answerByPolicy(w, r, pol); status != 0 {
			return
		}
	}
	addrs := s.Endpoints[*backend]
	if len(addrs) == 0 {
		status = http.StatusServiceUnavailable
		http.Error(w, "no endpoints", status)
		return
	}
	if limit := p.bodyLimit(pol); limit > 0 {
		if r.ContentLength > limit {
			status = http.StatusRequestEntityTooLarge
			http.Error(w, "request body too large", status)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}
	sw := &statusWriter{ResponseWriter: w}
	pk := &pick{backend: *backend, source: source, addrs: p.order(addrs), policy: pol, path: path, pattern: pattern, tls: r.TLS != nil, rule: rule, wb: wb}
	if pol != nil && pol.Affinity != nil {
		pk.addrs, pk.pinned = pinned(r, pol.Affinity, pk.addrs)
	}
	ctx := context.WithValue(r.Context(), ctxKey{}, pk)
	h2 := s.H2C[*backend] || (pol != nil && pol.H2C) || (rule != nil && rule.H2C)
	rp := p.rp
	switch {
	case pol != nil && pol.BackendTLS && h2:
		rp = p.h2OverTLS
	case pol != nil && pol.BackendTLS:
		rp = p.overTLS
	case h2:
		rp = p.h2c
	}
	rp.ServeHTTP(sw, r.WithContext(ctx))
	status = sw.status
}

// bodyLimit is the route's body limit, else the proxy's (0: none).
func (p *Proxy) bodyLimit(pol *route.Policy) int64 {
	switch {
	case pol != nil && pol.UnlimitedBody:
		return 0
	case pol != nil && pol.MaxBodyBytes > 0:
		return pol.MaxBodyBytes
	}
	return p.cfg.MaxBodyBytes
}

// answerByPolicy answers what the route's policy answers itself (403 for
// a client outside its ranges, its redirects) and returns the status, or
// 0 when the request goes on to the backend.
func answerByPolicy(w http.ResponseWriter, r *http.Request, pol *route.Policy) int {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err != nil || !pol.Permits(ap.Addr()) {
		http.Error(w, "forbidden", http.StatusForbidden)
		return http.StatusForbidden
	}
	if pol.CORS != nil && r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		setCORS(w.Header(), pol.CORS, r.Header.Get("Origin"), true)
		w.WriteHeader(http.StatusNoContent)
		return http.StatusNoContent
	}
	redirect := func(code int, to string) int {
		w.Header().Set("Location", to)
		w.WriteHeader(code)
		return code
	}
	switch {
	case pol.Redirect != nil:
		return redirect(pol.Redirect.Code, pol.Redirect.Location)
	case pol.HTTPSRedirect && r.TLS == nil:
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h // the client's port was for plain HTTP
		}
		return redirect(http.StatusPermanentRedirect, "https://"+host+r.URL.RequestURI())
	case pol.AppRoot != "" && r.URL.Path == "/":
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		return redirect(http.StatusFound, scheme+"://"+r.Host+pol.AppRoot) // absolute, as nginx writes it
	}
	return 0
}

// order rotates the endpoints round-robin and moves ejected ones last.
func (p *Proxy) order(addrs []string) []string {
	return p.orderInto(make([]string, 0, len(addrs)), addrs)
}

// orderInto is order appending to out.
func (p *Proxy) orderInto(out, addrs []string) []string {
	n := len(addrs)
	first := int(p.next.Add(1) % uint64(n))
	var late []string
	now := time.Now()
	p.mu.Lock()
	for i := 0; i < n; i++ {
		a := addrs[(first+i)%n]
		if until, ok := p.ejected[a]; ok && now.Before(until) {
			late = append(late, a)
			continue
		}
		out = append(out, a)
	}
	p.mu.Unlock()
	return append(out, late...)
}

func (p *Proxy) eject(addr string) {
	p.mu.Lock()
	p.ejected[addr] = time.Now().Add(p.cfg.EjectFor)
	p.mu.Unlock()
}

func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusBadGateway
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &mbe):
		status = http.StatusRequestEntityTooLarge
	case r.Context().Err() != nil:
		return // the client went away
	case errors.Is(err, errReadTimeout) || (errors.As(err, &ne) && ne.Timeout()):
		status = http.StatusGatewayTimeout // as nginx answers an upstream timeout
	}
	p.log.Warn("upstream failed", "host", r.Host, "path", r.URL.Path, "err", err)
	http.Error(w, http.StatusText(status), status)
}

// retrying sends a request to the picked endpoints in turn: on to the
// next when one refuses the connection (nothing was sent), for requests
// without a body, at most three tries.
type retrying struct {
	p    *Proxy
	base http.RoundTripper
}

func (t *retrying) RoundTrip(req *http.Request) (*http.Response, error) {
	pk, _ := req.Context().Value(ctxKey{}).(*pick)
	if pk == nil {
		return nil, errors.New("no endpoint picked")
	}
	var err error
	retried, refused := 0, 0
	nextUpstream := false
	for i := 0; ; i++ {
		addr := pk.addrs[i%len(pk.addrs)]
		req.URL.Host = addr
		var resp *http.Response
		base := t.base
		if pk.wb != nil && pk.wb.TLS != nil {
			base = t.p.transportFor(pk.wb.TLS)
		}
		resp, err = t.p.roundTrip(base, req, pk.policy)
		if err == nil && t.retryStatus(pk, req, resp, retried) {
			resp.Body.Close()
			retried++
			continue
		}
		if err == nil {
			if pk.policy != nil && pk.policy.Affinity != nil && addr != pk.pinned {
				resp.Header.Add("Set-Cookie", affinityCookie(pk, addr))
			}
			return resp, nil
		}
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" {
			t.p.metrics.upstream.WithLabelValues(pk.source, "failed").Inc()
			if req.Context().Err() == nil && t.retryError(pk, req, retried) {
				retried++ // a reset, a closed connection, the backend timeout
				continue
			}
			if req.Context().Err() == nil && !nextUpstream && nextUpstreamOnError(pk, req, err) {
				nextUpstream = true
				continue
			}
			return nil, err
		}
		t.p.metrics.upstream.WithLabelValues(pk.source, "refused").Inc()
		t.p.eject(addr)
		if req.Body != nil && req.Body != http.NoBody {
			return nil, err // the transport closed the body: it cannot go again
		}
		if refused++; refused == 3 || refused == len(pk.addrs) {
			return nil, err
		}
	}
}

// nextUpstreamOnError: a request without a body and an idempotent
// method whose endpoint failed before answering (a reset, a connection
// closed as its pod stopped) goes once to the next endpoint, as nginx's
// default proxy_next_upstream ("error") does; a timeout is the answer,
// and a Gateway API rule's own retry policy decides for its requests.
func nextUpstreamOnError(pk *pick, req *http.Request, err error) bool {
	if pk.rule != nil && pk.rule.Filters.Retry != nil {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		return false
	}
	var ne net.Error
	if len(pk.addrs) < 2 || (req.Body != nil && req.Body != http.NoBody) || errors.Is(err, errReadTimeout) || (errors.As(err, &ne) && ne.Timeout()) {
		return false
	}
	return true
}

// retryStatus: a Gateway API rule's retry policy asks for another try of
// a request without a body that got this status; it waits the backoff.
func (t *retrying) retryStatus(pk *pick, req *http.Request, resp *http.Response, retried int) bool {
	return pk.rule != nil && pk.rule.Filters.Retry != nil && pk.rule.Filters.Retry.Codes[resp.StatusCode] && t.retryError(pk, req, retried)
}

// retryError: a Gateway API rule's retry policy asks for another try of a
// request without a body whose try failed (the API: connection errors
// and timeouts are retried whatever the codes); it waits the backoff.
func (t *retrying) retryError(pk *pick, req *http.Request, retried int) bool {
	if pk.rule == nil || pk.rule.Filters.Retry == nil {
		return false
	}
	rt := pk.rule.Filters.Retry
	if retried >= rt.Attempts || (req.Body != nil && req.Body != http.NoBody) {
		return false
	}
	if rt.Backoff > 0 {
		select {
		case <-time.After(rt.Backoff):
		case <-req.Context().Done():
			return false
		}
	}
	return true
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets the reverse proxy reach the connection for upgrades
// (WebSocket) and flushes.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
