package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"weft.dev/weft/internal/ingress/h1"
)

// The plain listener's connections live on event loops: one goroutine per
// CPU waiting on its own epoll set for the client and backend sockets it
// serves, and reading and writing them with plain system calls. A
// goroutine per connection costs, per socket wait, a read that finds
// nothing, a park and a wake (Go's poller reads first and waits after);
// a loop waits first and then reads, as nginx does (bench/NOTES.md).
//
// A loop serves the common exchange itself: a request the fast path
// takes (package h1, fastRoute) without a body, and a response whose
// length is known and which fits the loop's buffer. Anything else goes,
// with the bytes read so far, to a goroutine that serves that request as
// the fast path always did (serveOne, relayBody) and gives the connection
// back.

// loopClient is a client connection a loop serves.
type loopClient struct {
	fd, id           int
	remote, clientIP string
	buf              []byte // what was read: the request's head first
	n                int
	req              h1.Request
	resp             h1.Response
	order            []string
	up               *loopUp // the backend exchange in flight
	out              []byte  // the response's bytes not written yet
	source           string
	status           int
	start            time.Time // the request's
	since            time.Time // the wait for a head began
	timed            bool      // part of a head has come: the header timeout runs
	readable         bool      // bytes may be unread (an edge came while busy)
	gone             bool      // closed, or given to a goroutine
}

// loopUp is a backend connection a loop owns, idle or in an exchange.
type loopUp struct {
	fd, id     int
	addr       string
	buf        []byte
	n          int
	out        []byte // the request's bytes not written yet
	connecting bool
	since      time.Time // connecting or idle since
	client     *loopClient
}

type eventLoop struct {
	p   *Proxy
	q   *connQueue
	ctx context.Context
	ep  int
	// epf is ep on Go's poller: the loop's goroutine parks there when no
	// socket is ready, as a goroutine waiting on one socket would (a
	// thread blocked in epoll_wait would cost a hand-over of its P).
	epf  *os.File
	eprc syscall.RawConn
	wake int // eventfd: the inbox has something

	mu       sync.Mutex
	inbox    []*fastConn
	draining bool
	killed   bool

	clients map[int32]*loopClient
	ups     map[int32]*loopUp
	idle    map[string][]*loopUp
	nextID  int
	scratch bytes.Buffer
	jobs    *sync.WaitGroup // goroutines serving a request for the loop
	away    *fastConns      // their connections (closed if shutdown runs late)
	done    chan struct{}
}

func newEventLoop(ctx context.Context, p *Proxy, q *connQueue, jobs *sync.WaitGroup, away *fastConns) (*eventLoop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(ep)
		return nil, err
	}
	l := &eventLoop{p: p, q: q, ctx: ctx, ep: ep, wake: wake, clients: map[int32]*loopClient{}, ups: map[int32]*loopUp{},
		idle: map[string][]*loopUp{}, jobs: jobs, away: away, done: make(chan struct{})}
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return nil, err
	}
	l.epf = os.NewFile(uintptr(ep), "weft-ingress-epoll")
	if l.eprc, err = l.epf.SyscallConn(); err != nil {
		l.closeFDs()
		return nil, err
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		l.closeFDs()
		return nil, err
	}
	return l, nil
}

func (l *eventLoop) closeFDs() {
	unix.Close(l.wake)
	l.epf.Close()
}

// give hands the loop a connection (accepted, or back from a goroutine);
// false when the loop has stopped taking them.
func (l *eventLoop) give(fc *fastConn) bool {
	l.mu.Lock()
	if l.draining {
		l.mu.Unlock()
		return false
	}
	l.inbox = append(l.inbox, fc)
	l.mu.Unlock()
	l.signal()
	return true
}

func (l *eventLoop) signal() {
	one := [8]byte{1}
	_, _ = unix.Write(l.wake, one[:])
}

// drain stops taking connections: idle ones close now, busy ones after
// their response. kill closes every connection now.
func (l *eventLoop) drain() { l.mu.Lock(); l.draining = true; l.mu.Unlock(); l.signal() }
func (l *eventLoop) kill()  { l.mu.Lock(); l.draining, l.killed = true, true; l.mu.Unlock(); l.signal() }

// sweepEvery is how often timeouts are checked: a quarter of the shortest.
func sweepEvery() time.Duration {
	return min(fastHeaderTimeout, fastIdleTimeout, time.Second*4) / 4
}

// run serves until drained (every connection closed) or killed.
func (l *eventLoop) run() {
	defer close(l.done)
	defer l.closeFDs()
	evs := make([]unix.EpollEvent, 256)
	every := sweepEvery()
	_ = l.epf.SetReadDeadline(time.Now().Add(every))
	for {
		n, err := l.wait(evs)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			l.sweep(time.Now())
			_ = l.epf.SetReadDeadline(time.Now().Add(every))
		case err != nil:
			l.p.log.Error("ingress event loop stopped", "err", err)
			l.closeAll()
			return
		}
		for _, e := range evs[:n] {
			l.dispatch(e)
		}
		if l.finished() {
			return
		}
	}
}

// wait returns the ready events, parking on Go's poller while there are
// none (until the read deadline: then os.ErrDeadlineExceeded).
func (l *eventLoop) wait(evs []unix.EpollEvent) (int, error) {
	var n int
	var werr error
	err := l.eprc.Read(func(fd uintptr) bool {
		n, werr = epollPoll(int(fd), evs)
		if errors.Is(werr, unix.EINTR) {
			n, werr = 0, nil
		}
		return n > 0 || werr != nil
	})
	if werr != nil {
		return 0, werr
	}
	return max(n, 0), err
}

func (l *eventLoop) dispatch(e unix.EpollEvent) {
	if e.Fd == int32(l.wake) {
		var b [8]byte
		_, _ = unix.Read(l.wake, b[:])
		l.takeInbox()
		return
	}
	if c := l.clients[e.Fd]; c != nil && c.id == int(e.Pad) {
		l.clientEvent(c, e.Events)
	} else if u := l.ups[e.Fd]; u != nil && u.id == int(e.Pad) {
		l.upEvent(u, e.Events)
	}
}

// finished closes what is left once draining allows it.
func (l *eventLoop) finished() bool {
	l.mu.Lock()
	draining, killed := l.draining, l.killed
	l.mu.Unlock()
	if !draining {
		return false
	}
	for _, c := range l.clients {
		if killed || (c.up == nil && len(c.out) == 0) {
			l.closeClient(c)
		}
	}
	if len(l.clients) > 0 {
		return false
	}
	l.closeAll()
	return true
}

func (l *eventLoop) closeAll() {
	for _, c := range l.clients {
		l.closeClient(c)
	}
	for _, u := range l.ups {
		l.closeUp(u)
	}
	l.mu.Lock()
	l.draining = true
	inbox := l.inbox
	l.inbox = nil
	l.mu.Unlock()
	for _, fc := range inbox {
		fc.c.Close()
	}
}

func (l *eventLoop) takeInbox() {
	l.mu.Lock()
	inbox := l.inbox
	l.inbox = nil
	l.mu.Unlock()
	for _, fc := range inbox {
		l.adopt(fc)
	}
}

// register adds fd to the epoll set under a new id (events of an fd
// number closed and reused within one batch are told apart by it).
func (l *eventLoop) register(fd int) (int, error) {
	l.nextID++
	id := l.nextID & 0x7fffffff
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd), Pad: int32(id)}
	return id, unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &ev)
}

// adopt takes a connection off Go's poller onto the loop with the bytes
// already read from it.
func (l *eventLoop) adopt(fc *fastConn) {
	pre := fc.unread()
	if len(pre) > clientBufSize {
		l.goServe(fc.buffered(), func() { l.p.serveConn(l.ctx, fc, l.q) })
		return
	}
	fd, err := detach(fc.c)
	if err != nil {
		return
	}
	c := &loopClient{fd: fd, remote: fc.remote, clientIP: fc.clientIP, buf: make([]byte, clientBufSize), since: time.Now()}
	c.n = copy(c.buf, pre)
	if c.id, err = l.register(fd); err != nil {
		unix.Close(fd)
		return
	}
	l.clients[int32(fd)] = c
	c.readable = true
	l.next(c)
}

// detach returns a duplicate of c's socket, in non-blocking mode, and
// closes c (taking the socket off Go's poller).
func detach(c net.Conn) (int, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return -1, errors.New("not a TCP connection")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		c.Close()
		return -1, err
	}
	fd := -1
	cerr := rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	c.Close()
	if cerr != nil {
		return -1, cerr
	}
	if err != nil {
		return -1, err
	}
	return fd, unix.SetNonblock(fd, true)
}

// attach gives fd back to Go as a net.Conn (and closes fd).
func attach(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "")
	defer f.Close()
	return net.FileConn(f)
}

func (c *loopClient) busy() bool { return c.gone || c.up != nil || len(c.out) > 0 }

func (l *eventLoop) clientEvent(c *loopClient, ev uint32) {
	if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 && len(c.out) > 0 {
		l.writeClient(c, nil)
		if c.gone {
			return
		}
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		c.readable = true
		l.next(c)
	}
}

// next reads and serves the client's next request once it is not busy.
func (l *eventLoop) next(c *loopClient) {
	for !c.busy() {
		if c.n > 0 && h1.HeadEnd(c.buf[:c.n]) >= 0 {
			l.serve(c)
			continue
		}
		if !c.readable {
			return
		}
		if c.n == len(c.buf) {
			l.toGoroutine(c) // a longer head: net/http's
			return
		}
		k, err := rawRead(c.fd, c.buf[c.n:])
		switch {
		case errors.Is(err, unix.EAGAIN):
			c.readable = false
			return
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil || k == 0:
			l.closeClient(c)
			return
		}
		if c.n+k < len(c.buf) {
			c.readable = false // read less than asked: the socket is drained
		}
		c.n += k
		if !c.timed {
			c.timed, c.since = true, time.Now()
		}
	}
}

// serve starts the exchange of the head at the start of c.buf.
func (l *eventLoop) serve(c *loopClient) {
	head := h1.HeadEnd(c.buf[:c.n])
	c.start = time.Now()
	if !h1.ParseRequest(c.buf[:head], &c.req) || c.req.ContentLength > 0 {
		l.toGoroutine(c)
		return
	}
	s := l.p.snap.Load()
	backend, source, ok := l.p.fastRoute(s, &c.req)
	if !ok {
		l.toGoroutine(c)
		return
	}
	c.source = source
	c.order = l.p.orderInto(c.order[:0], s.Endpoints[backend])
	u := l.takeIdle(c.order[0])
	if u == nil {
		var err error
		if u, err = l.connect(c.order[0]); err != nil {
			l.toGoroutine(c) // it dials, moves on to other endpoints, answers 502
			return
		}
	}
	l.scratch.Reset()
	writeRequestHead(&l.scratch, &c.req, c.clientIP)
	u.out = append(u.out[:0], l.scratch.Bytes()...)
	u.n, u.client, c.up = 0, c, u
	if !u.connecting {
		l.writeUp(u)
	}
}

// toGoroutine serves c's next request in a goroutine as the fast path
// does (which may hand c to net/http), then gives c back.
func (l *eventLoop) toGoroutine(c *loopClient) {
	fc, err := l.release(c)
	if err != nil {
		return
	}
	l.goServe(fc, func() {
		if l.p.serveOne(l.ctx, fc, l.q) && !l.give(fc) {
			fc.c.Close()
		}
	})
}

// goServe runs serve, which serves fc, in a goroutine Serve waits for.
func (l *eventLoop) goServe(fc *fastConn, serve func()) {
	l.jobs.Add(1)
	l.away.add(fc)
	go func() {
		defer l.jobs.Done()
		defer l.away.remove(fc)
		serve()
	}()
}

// release takes c off the loop as a fastConn with its unread bytes.
func (l *eventLoop) release(c *loopClient) (*fastConn, error) {
	if c.up != nil {
		l.closeUp(c.up)
		c.up = nil
	}
	_ = unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, c.fd, nil)
	delete(l.clients, int32(c.fd))
	c.gone = true
	conn, err := attach(c.fd)
	if err != nil {
		return nil, err
	}
	fc := &fastConn{c: conn, remote: c.remote, clientIP: c.clientIP, req: c.req}
	fc.replay = &replayConn{Conn: conn, pre: bytes.Clone(c.buf[:c.n])}
	fc.br = bufio.NewReaderSize(fc.replay, clientBufSize)
	fc.bw = bufio.NewWriterSize(conn, 4<<10)
	return fc, nil
}

// unread is what was read of the connection and not served yet.
func (fc *fastConn) unread() []byte {
	var b []byte
	if fc.br != nil {
		b, _ = fc.br.Peek(fc.br.Buffered())
	}
	if fc.replay != nil && len(fc.replay.pre) > 0 {
		b = append(bytes.Clone(b), fc.replay.pre...)
	}
	return b
}

func (l *eventLoop) closeClient(c *loopClient) {
	if c.up != nil {
		l.closeUp(c.up)
		c.up = nil
	}
	delete(l.clients, int32(c.fd))
	c.gone = true
	unix.Close(c.fd)
}

func (l *eventLoop) takeIdle(addr string) *loopUp {
	list := l.idle[addr]
	if len(list) == 0 {
		return nil
	}
	u := list[len(list)-1]
	l.idle[addr] = list[:len(list)-1]
	return u
}

func (l *eventLoop) putIdle(u *loopUp) {
	u.client, u.since = nil, time.Now()
	if len(l.idle[u.addr]) >= upstreamIdleMax {
		l.closeUp(u)
		return
	}
	l.idle[u.addr] = append(l.idle[u.addr], u)
}

func (l *eventLoop) closeUp(u *loopUp) {
	if list := l.idle[u.addr]; u.client == nil {
		for i, x := range list {
			if x == u {
				l.idle[u.addr] = append(list[:i], list[i+1:]...)
				break
			}
		}
	}
	delete(l.ups, int32(u.fd))
	unix.Close(u.fd)
}

// connect opens a backend connection without waiting for it.
func (l *eventLoop) connect(addr string) (*loopUp, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	var sa unix.Sockaddr
	family := unix.AF_INET
	if a := ap.Addr().Unmap(); a.Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	// As Go's dialer sets them.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 30)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 30)
	if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		return nil, err
	}
	u := &loopUp{fd: fd, addr: addr, buf: make([]byte, upstreamBufSize), connecting: true, since: time.Now()}
	if u.id, err = l.register(fd); err != nil {
		unix.Close(fd)
		return nil, err
	}
	l.ups[int32(fd)] = u
	return u, nil
}

func (l *eventLoop) upEvent(u *loopUp, ev uint32) {
	c := u.client
	if c == nil { // idle: the backend closed it, or said something unasked
		if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			l.closeUp(u)
		}
		return
	}
	if u.connecting {
		if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		if soerr, err := unix.GetsockoptInt(u.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soerr != 0 {
			l.connectFailed(u)
			return
		}
		u.connecting = false
	}
	if len(u.out) > 0 && !l.writeUp(u) {
		return
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		l.readUp(u)
	}
}

// connectFailed: the endpoint refused; the goroutine tries the others.
func (l *eventLoop) connectFailed(u *loopUp) {
	c := u.client
	l.p.metrics.upstream.WithLabelValues(c.source, "refused").Inc()
	l.p.eject(u.addr)
	l.toGoroutine(c)
}

// writeUp writes the request; false when the exchange ended.
func (l *eventLoop) writeUp(u *loopUp) bool {
	for len(u.out) > 0 {
		k, err := rawWrite(u.fd, u.out)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return true
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			l.upFailed(u, err)
			return false
		}
		u.out = u.out[k:]
	}
	u.out = u.out[:0]
	return true
}

// upFailed: the backend failed before the response's head. A request
// that may go again goes to a goroutine (as a pooled connection found
// closed, or the next endpoint); any other is answered 502.
func (l *eventLoop) upFailed(u *loopUp, err error) {
	c := u.client
	if replayable(&c.req) {
		l.toGoroutine(c)
		return
	}
	l.p.metrics.upstream.WithLabelValues(c.source, "failed").Inc()
	l.p.log.Warn("upstream failed", "client", c.remote, "err", err)
	l.closeUp(u)
	c.up = nil
	c.req.Close = true
	c.status = http.StatusBadGateway
	l.writeClient(c, errorResponse(http.StatusBadGateway))
}

func (l *eventLoop) readUp(u *loopUp) {
	c := u.client
	for {
		if u.n == len(u.buf) {
			l.toGoroutine(c) // a head longer than the buffer: relayed or refused there
			return
		}
		k, err := rawRead(u.fd, u.buf[u.n:])
		switch {
		case errors.Is(err, unix.EAGAIN):
			return
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil || k == 0:
			if err == nil {
				err = errors.New("backend closed the connection")
			}
			if u.n == 0 {
				l.upFailed(u, err)
			} else {
				l.relayInGoroutine(c) // it reports the truncated response as the fast path does
			}
			return
		}
		u.n += k
		if l.respond(c, u) || k < len(u.buf)-(u.n-k) {
			return
		}
	}
}

// respond answers the client once the whole response is in u.buf; true
// when the exchange left the loop's hands (answered or handed over).
func (l *eventLoop) respond(c *loopClient, u *loopUp) bool {
	head := h1.HeadEnd(u.buf[:u.n])
	if head < 0 {
		return false
	}
	resp := &c.resp
	if err := h1.ParseResponse(u.buf[:head], resp); err != nil || resp.Status < 200 {
		l.relayInGoroutine(c) // 1xx, or the error answered there
		return true
	}
	var body int64
	if !h1.NoBody(c.req.Method, resp.Status) {
		if resp.ContentLength < 0 || int64(head)+resp.ContentLength > int64(len(u.buf)) {
			l.relayInGoroutine(c) // streamed there
			return true
		}
		body = resp.ContentLength
	}
	end := head + int(body)
	if u.n < end {
		return false
	}
	l.scratch.Reset()
	writeResponseHead(&l.scratch, &c.req, resp)
	l.scratch.Write(u.buf[head:end])
	c.status = resp.Status
	c.up = nil
	if resp.Close || u.n > end {
		l.closeUp(u) // more than the response came: not reusable
	} else {
		u.n = 0
		l.putIdle(u)
	}
	l.writeClient(c, l.scratch.Bytes())
	return true
}

// relayInGoroutine hands the client and the backend connection, with
// the bytes read of both, to a goroutine that relays the response as
// the fast path does, then gives the client back.
func (l *eventLoop) relayInGoroutine(c *loopClient) {
	u := c.up
	c.up = nil
	pre := bytes.Clone(u.buf[:u.n])
	_ = unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, u.fd, nil)
	delete(l.ups, int32(u.fd))
	uconn, err := attach(u.fd)
	source, start := c.source, c.start
	fc, ferr := l.release(c)
	if err != nil || ferr != nil {
		if uconn != nil {
			uconn.Close()
		}
		if fc != nil {
			fc.c.Close()
		}
		return
	}
	uc := &upConn{addr: u.addr, c: uconn, br: bufio.NewReaderSize(&replayConn{Conn: uconn, pre: pre}, upstreamBufSize),
		bw: bufio.NewWriterSize(uconn, 4<<10)}
	l.goServe(fc, func() {
		req := &fc.req
		headLen, err := readResponseHead(uc.br, &fc.resp)
		status, keep := 0, false
		if err != nil {
			uc.c.Close()
		} else {
			_, _ = fc.br.Discard(req.Len)
			status, keep, err = l.p.relayBody(fc, req, uc, headLen)
		}
		status, keep = l.p.finish(fc, source, status, keep, err)
		l.p.account(req, fc.remote, source, status, start)
		if !keep || req.Close || l.ctx.Err() != nil || !l.give(fc) {
			fc.c.Close()
		}
	})
}

// writeClient writes b (nil: what is pending) and, once all is written,
// ends the exchange.
func (l *eventLoop) writeClient(c *loopClient, b []byte) {
	if b == nil {
		b = c.out
	}
	for len(b) > 0 {
		k, err := rawWrite(c.fd, b)
		switch {
		case errors.Is(err, unix.EAGAIN):
			c.out = append(c.out[:0], b...)
			return
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			l.p.account(&c.req, c.remote, c.source, c.status, c.start)
			l.closeClient(c)
			return
		}
		b = b[k:]
	}
	c.out = c.out[:0]
	l.p.account(&c.req, c.remote, c.source, c.status, c.start)
	if c.req.Close {
		l.closeClient(c)
		return
	}
	n := copy(c.buf, c.buf[c.req.Len:c.n])
	c.n, c.timed, c.since = n, false, time.Now()
	l.mu.Lock()
	draining := l.draining
	l.mu.Unlock()
	if draining {
		l.closeClient(c)
		return
	}
	l.next(c)
}

// sweep closes connections past their timeouts.
func (l *eventLoop) sweep(now time.Time) {
	for _, c := range l.clients {
		if c.busy() {
			continue
		}
		limit := fastIdleTimeout
		if c.timed {
			limit = fastHeaderTimeout
		}
		if now.Sub(c.since) > limit {
			l.closeClient(c)
		}
	}
	for _, u := range l.ups {
		switch {
		case u.connecting && now.Sub(u.since) > l.p.cfg.DialTimeout:
			l.connectFailed(u)
		case u.client == nil && now.Sub(u.since) > upstreamIdle:
			l.closeUp(u)
		}
	}
}

// errorResponse is what fastError writes.
func errorResponse(code int) []byte {
	var b bytes.Buffer
	writeError(&b, code)
	return b.Bytes()
}

// The loop's sockets never block, so their system calls skip the
// runtime's syscall bookkeeping (and sysmon's hand-over of the P).
func rawRead(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func rawWrite(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// epollPoll returns the ready events without waiting.
func epollPoll(ep int, evs []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}
