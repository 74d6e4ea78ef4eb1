package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"weft.dev/weft/internal/ingress/accesslog"
	"weft.dev/weft/internal/ingress/h1"
	"weft.dev/weft/internal/ingress/route"
)

// The plain-HTTP listener's fast path. net/http's server and client cost
// several goroutines, channel hand-overs, a background read and a dozen
// allocations per proxied request; nginx does the same work in a few
// system calls. Serve reads the plainest HTTP/1.1 requests (package h1
// says which) to plain routes itself and copies them to a pooled backend
// connection (on event loops, loop.go, or a goroutine per connection);
// every other request (HTTP/2, upgrades, policies, errors) hands its
// connection, with the bytes read so far, to net/http.

// Variables so tests can shorten them.
var (
	fastIdleTimeout   = 120 * time.Second // as the net/http server's IdleTimeout
	fastHeaderTimeout = 10 * time.Second  // as its ReadHeaderTimeout
)

const (
	upstreamIdle    = 90 * time.Second // as the transport's IdleConnTimeout
	upstreamIdleMax = 64               // idle connections kept per endpoint
	clientBufSize   = 8 << 10          // a longer head goes to net/http
	upstreamBufSize = 16 << 10         // the longest backend head forwarded
)

// Serve accepts on l until ctx ends, serving what the fast path can on
// event loops (loop.go) and handing every other connection to slow
// (whose Handler is p). It drains its connections before returning;
// slow is shut down by its owner. With p's NoEventLoop a goroutine
// serves each connection instead.
func (p *Proxy) Serve(ctx context.Context, l net.Listener, slow *http.Server) error {
	q := newConnQueue(l.Addr())
	go func() { _ = slow.Serve(q) }()
	defer q.Close()
	stopJanitor := p.startJanitor()
	defer stopJanitor()
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	if p.cfg.NoEventLoop {
		return p.serveGoroutines(ctx, l, q)
	}
	var jobs sync.WaitGroup
	away := &fastConns{m: map[*fastConn]struct{}{}}
	loops := make([]*eventLoop, runtime.GOMAXPROCS(0))
	for i := range loops {
		lp, err := newEventLoop(ctx, p, q, &jobs, away)
		if err != nil {
			for _, o := range loops[:i] {
				o.kill()
			}
			return err
		}
		loops[i] = lp
		go lp.run()
	}
	err := accept(ctx, l, func(c net.Conn, i int) {
		fc := &fastConn{c: c, remote: c.RemoteAddr().String()}
		fc.clientIP, _, _ = net.SplitHostPort(fc.remote)
		if !loops[i%len(loops)].give(fc) {
			c.Close()
		}
	})
	for _, lp := range loops {
		lp.drain()
	}
	done := make(chan struct{})
	go func() {
		for _, lp := range loops {
			<-lp.done
		}
		jobs.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		for _, lp := range loops {
			lp.kill()
		}
		away.closeAll()
		<-done
	}
	return err
}

// accept calls serve with each connection l accepts (and its count)
// until ctx ends; nil then.
func accept(ctx context.Context, l net.Listener, serve func(net.Conn, int)) error {
	for i := 0; ; i++ {
		c, err := l.Accept()
		if err != nil {
			var ne net.Error
			if ctx.Err() == nil && errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			if ctx.Err() == nil {
				return err
			}
			return nil
		}
		serve(c, i)
	}
}

// serveGoroutines serves each connection in a goroutine of its own.
func (p *Proxy) serveGoroutines(ctx context.Context, l net.Listener, q *connQueue) error {
	conns := &fastConns{m: map[*fastConn]struct{}{}}
	var wg sync.WaitGroup
	err := accept(ctx, l, func(c net.Conn, _ int) {
		fc := newFastConn(c)
		conns.add(fc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conns.remove(fc)
			p.serveConn(ctx, fc, q)
		}()
	})
	conns.wakeIdle()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		conns.closeAll()
		<-done
	}
	return err
}

// fastConn is a client connection on the fast path.
type fastConn struct {
	c        net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	remote   string // "ip:port", as net/http's RemoteAddr
	clientIP string
	idle     atomic.Bool
	deadline time.Time   // the read deadline last armed
	replay   *replayConn // what br reads first, if anything
	// Reused by each request's exchange.
	req   h1.Request
	resp  h1.Response
	order []string
}

func newFastConn(c net.Conn) *fastConn {
	fc := &fastConn{c: c, br: bufio.NewReaderSize(c, clientBufSize), bw: bufio.NewWriterSize(c, 4<<10), remote: c.RemoteAddr().String()}
	fc.clientIP, _, _ = net.SplitHostPort(fc.remote)
	return fc
}

// buffered gives fc the reader and writer a connection taken from a loop
// lacks.
func (fc *fastConn) buffered() *fastConn {
	if fc.br == nil {
		pre := fc.unread()
		fc.replay = &replayConn{Conn: fc.c, pre: pre}
		fc.br = bufio.NewReaderSize(fc.replay, clientBufSize)
		fc.bw = bufio.NewWriterSize(fc.c, 4<<10)
	}
	return fc
}

type fastConns struct {
	mu sync.Mutex
	m  map[*fastConn]struct{}
}

func (s *fastConns) add(fc *fastConn)    { s.mu.Lock(); s.m[fc] = struct{}{}; s.mu.Unlock() }
func (s *fastConns) remove(fc *fastConn) { s.mu.Lock(); delete(s.m, fc); s.mu.Unlock() }

// wakeIdle ends the wait of connections between requests; those in a
// request close after its response.
func (s *fastConns) wakeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for fc := range s.m {
		if fc.idle.Load() {
			_ = fc.c.SetReadDeadline(time.Unix(1, 0))
		}
	}
}

func (s *fastConns) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for fc := range s.m {
		fc.c.Close()
	}
}

func (p *Proxy) serveConn(ctx context.Context, fc *fastConn, q *connQueue) {
	for p.serveOne(ctx, fc, q) {
	}
}

// serveOne serves the connection's next request; false once the
// connection is closed or handed to net/http.
func (p *Proxy) serveOne(ctx context.Context, fc *fastConn, q *connQueue) bool {
	req := &fc.req
	head, err := fc.nextHead(ctx)
	if err != nil {
		fc.c.Close()
		return false
	}
	start := time.Now()
	if head == nil || !h1.ParseRequest(head, req) {
		p.handoff(fc, q)
		return false
	}
	s := p.snap.Load()
	backend, source, ok := p.fastRoute(s, req)
	if !ok {
		p.handoff(fc, q)
		return false
	}
	status, keep := p.forward(fc, req, s.Endpoints[backend], source)
	p.account(req, fc.remote, source, status, start)
	if !keep || req.Close || ctx.Err() != nil {
		fc.c.Close()
		return false
	}
	return true
}

// account records a served request in the metrics and the access log.
func (p *Proxy) account(req *h1.Request, client, source string, status int, start time.Time) {
	took := time.Since(start)
	p.metrics.observe(source, status, took.Seconds())
	p.cfg.AccessLog.Write(&accesslog.Record{Method: req.Method, Host: req.Host, Path: req.Path, Status: status,
		Client: client, Ingress: source, Took: took})
}

// nextHead waits for the next request's head and returns it unread (nil
// when it does not fit the buffer: net/http takes longer heads).
func (fc *fastConn) nextHead(ctx context.Context) ([]byte, error) {
	fc.idle.Store(true)
	defer fc.idle.Store(false)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err := fc.armReadDeadline(fastIdleTimeout); err != nil {
		return nil, err
	}
	timed := false
	for {
		b, _ := fc.br.Peek(fc.br.Buffered())
		if n := h1.HeadEnd(b); n >= 0 {
			return b[:n], nil
		}
		if len(b) == fc.br.Size() {
			return nil, nil
		}
		if len(b) > 0 && !timed {
			timed = true
			fc.idle.Store(false)
			if err := fc.armReadDeadline(fastHeaderTimeout); err != nil {
				return nil, err
			}
		}
		if _, err := fc.br.Peek(len(b) + 1); err != nil {
			return nil, err
		}
	}
}

// armReadDeadline sets the read deadline d from now, unless the one armed
// is less than 1% of d earlier (the wait then ends that much sooner):
// re-arming the poller's timer on every request of a busy connection
// costs more than the rest of its bookkeeping.
func (fc *fastConn) armReadDeadline(d time.Duration) error {
	want := time.Now().Add(d)
	if ahead := want.Sub(fc.deadline); ahead >= 0 && ahead < d/100 {
		return nil
	}
	fc.deadline = want
	return fc.c.SetReadDeadline(want)
}

// fastRoute returns the backend of a request the fast path serves: a
// plain route (no policy, canary or regex) to an HTTP/1.1 backend with
// endpoints, a body within the limit. Anything else is net/http's.
func (p *Proxy) fastRoute(s *Snapshot, req *h1.Request) (route.Backend, string, bool) {
	var b route.Backend
	source := "default"
	if rt, ok := s.Table.Match(string(req.Host), string(req.Path)); ok {
		if rt.Policy != nil || rt.Canary != nil || rt.Pattern != nil || len(rt.Rules) > 0 {
			return b, "", false
		}
		b, source = rt.Backend, rt.Source
	} else if s.Table.Default != nil {
		b = *s.Table.Default
	} else {
		return b, "", false
	}
	if len(s.Endpoints[b]) == 0 || s.H2C[b] {
		return b, "", false
	}
	if limit := p.cfg.MaxBodyBytes; limit > 0 && req.ContentLength > limit {
		return b, "", false
	}
	return b, source, true
}

// handoff gives the connection, with what was read of it, to net/http.
func (p *Proxy) handoff(fc *fastConn, q *connQueue) {
	_ = fc.c.SetReadDeadline(time.Time{})
	b, _ := fc.br.Peek(fc.br.Buffered())
	rc := &replayConn{Conn: fc.c, pre: bytes.Clone(b)}
	if !q.push(rc) {
		fc.c.Close()
	}
}

// replayConn reads first what was read already (by the fast path, or
// a TLSRoute's ClientHello).
type replayConn struct {
	net.Conn
	pre []byte
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// connQueue is the listener net/http serves: connections handed off.
type connQueue struct {
	addr   net.Addr
	ch     chan net.Conn
	mu     sync.Mutex
	closed chan struct{}
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.closed:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.closed:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	select {
	case <-q.closed:
	default:
		close(q.closed)
	}
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }
