package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"syscall"
	"time"

	"weft.dev/weft/internal/ingress/h1"
)

// upConn is a pooled connection to an endpoint.
type upConn struct {
	addr  string
	c     net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	since time.Time // idle since
}

// upstreams keeps idle backend connections per endpoint.
type upstreams struct {
	mu   sync.Mutex
	idle map[string][]*upConn
}

func (u *upstreams) get(addr string) *upConn {
	u.mu.Lock()
	defer u.mu.Unlock()
	for l := u.idle[addr]; len(l) > 0; l = u.idle[addr] {
		uc := l[len(l)-1]
		u.idle[addr] = l[:len(l)-1]
		if time.Since(uc.since) < upstreamIdle {
			return uc
		}
		uc.c.Close()
	}
	return nil
}

func (u *upstreams) put(uc *upConn) {
	uc.since = time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.idle[uc.addr]) >= upstreamIdleMax {
		uc.c.Close()
		return
	}
	u.idle[uc.addr] = append(u.idle[uc.addr], uc)
}

// prune closes connections idle too long (an endpoint gone keeps none).
func (u *upstreams) prune() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for addr, l := range u.idle {
		kept := l[:0]
		for _, uc := range l {
			if time.Since(uc.since) < upstreamIdle {
				kept = append(kept, uc)
			} else {
				uc.c.Close()
			}
		}
		if len(kept) == 0 {
			delete(u.idle, addr)
		} else {
			u.idle[addr] = kept
		}
	}
}

func (p *Proxy) startJanitor() (stop func()) {
	t := time.NewTicker(upstreamIdle / 3)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-t.C:
				p.up.prune()
			case <-done:
				t.Stop()
				return
			}
		}
	}()
	return func() { close(done) }
}

func (p *Proxy) dialUp(addr string) (*upConn, error) {
	d := net.Dialer{Timeout: p.cfg.DialTimeout, KeepAlive: 30 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &upConn{addr: addr, c: c, br: bufio.NewReaderSize(c, upstreamBufSize), bw: bufio.NewWriterSize(c, 4<<10)}, nil
}

// errStale: a pooled connection the backend had closed; the request
// goes again on a new one when nothing of it was lost.
var errStale = errors.New("pooled backend connection closed")

// forward sends the request to one of addrs (round-robin, ejected last,
// on to the next when one refuses, at most three; a replayable request
// whose endpoint failed before answering goes once to the next, as
// nginx's default proxy_next_upstream does) and relays the response. It returns the status sent and whether the client's
// connection can take another request.
func (p *Proxy) forward(fc *fastConn, req *h1.Request, addrs []string, source string) (int, bool) {
	var err error
	tries := 0
	movedOn := false // once: a failed replayable request went to the next endpoint
	next := func(status int, err error) bool {
		if err == nil || status != 0 || movedOn || len(addrs) < 2 || !replayable(req) {
			return false
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return false
		}
		movedOn = true
		p.metrics.upstream.WithLabelValues(source, "failed").Inc()
		p.log.Debug("upstream failed; the request goes to the next endpoint", "path", string(req.Path), "err", err)
		return true
	}
	fc.order = p.orderInto(fc.order[:0], addrs)
endpoints:
	for _, addr := range fc.order {
		if tries == 3 {
			break
		}
		tries++
		uc := p.up.get(addr)
		for uc != nil {
			var status int
			var keep bool
			status, keep, err = p.exchange(fc, req, uc)
			if !errors.Is(err, errStale) {
				if next(status, err) {
					continue endpoints
				}
				return p.finish(fc, source, status, keep, err)
			}
			uc = p.up.get(addr)
		}
		if uc, err = p.dialUp(addr); err != nil {
			p.metrics.upstream.WithLabelValues(source, "refused").Inc()
			p.eject(addr)
			continue
		}
		var status int
		var keep bool
		status, keep, err = p.exchange(fc, req, uc)
		if next(status, err) {
			continue
		}
		return p.finish(fc, source, status, keep, err)
	}
	p.log.Warn("upstream failed", "host", string(req.Host), "path", string(req.Path), "err", err)
	return fastError(fc, http.StatusBadGateway), false
}

// finish accounts for an exchange's error: before anything was sent to
// the client it answers 502; after, the client's connection is cut.
func (p *Proxy) finish(fc *fastConn, source string, status int, keep bool, err error) (int, bool) {
	if err == nil {
		return status, keep
	}
	p.metrics.upstream.WithLabelValues(source, "failed").Inc()
	p.log.Warn("upstream failed", "client", fc.remote, "err", err)
	if status == 0 {
		return fastError(fc, http.StatusBadGateway), false
	}
	return status, false
}

// fastError answers as http.Error does and closes the connection (the
// request's body may be unread).
func fastError(fc *fastConn, code int) int {
	writeError(fc.bw, code)
	_ = fc.bw.Flush()
	return code
}

func writeError(w io.Writer, code int) {
	text := http.StatusText(code) + "\n"
	fmt.Fprintf(w, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, http.StatusText(code), len(text), text)
}

// exchange writes the request on uc and relays the response. status is
// 0 when nothing was sent to the client yet; errStale when uc was a
// pooled connection found closed before anything was lost.
func (p *Proxy) exchange(fc *fastConn, req *h1.Request, uc *upConn) (status int, keep bool, err error) {
	reused := !uc.since.IsZero()
	writeRequestHead(uc.bw, req, fc.clientIP)
	bodySent := false
	if err = uc.bw.Flush(); err == nil && req.ContentLength > 0 {
		_, _ = fc.br.Discard(req.Len)
		bodySent = true
		if err = copyN(uc.bw, fc.br, req.ContentLength); err == nil {
			err = uc.bw.Flush()
		}
	}
	resp := &fc.resp
	var headLen int
	if err == nil {
		headLen, err = readResponseHead(uc.br, resp)
	}
	if err != nil {
		uc.c.Close()
		if reused && !bodySent && replayable(req) && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
			return 0, false, errStale
		}
		return 0, false, err
	}
	if !bodySent {
		_, _ = fc.br.Discard(req.Len)
	}
	return p.relayBody(fc, req, uc, headLen)
}

// relayBody relays the response whose head (headLen bytes, parsed into
// fc.resp) is next in uc, then pools uc or closes it (also when more
// than the response came: the surplus would answer the next request).
func (p *Proxy) relayBody(fc *fastConn, req *h1.Request, uc *upConn, headLen int) (status int, keep bool, err error) {
	resp := &fc.resp
	keep, err = relayResponse(fc, req, resp, uc, headLen)
	if err != nil || resp.Close || uc.br.Buffered() > 0 || (resp.UntilClose() && !h1.NoBody(req.Method, resp.Status)) {
		uc.c.Close()
	} else {
		p.up.put(uc)
	}
	return resp.Status, keep && err == nil, err
}

// replayable: a request that may go again when a pooled connection
// turns out closed (as net/http's transport retries).
func replayable(req *h1.Request) bool {
	switch string(req.Method) {
	case "GET", "HEAD", "OPTIONS":
		return req.ContentLength == 0
	}
	return false
}

// writeRequestHead writes what the backend gets: the request line and
// the client's headers but hop-by-hop ones and its own forwarding
// headers, then weft's X-Forwarded-* and the body's length.
func writeRequestHead(w headWriter, req *h1.Request, clientIP string) {
	w.Write(req.Method)
	w.WriteByte(' ')
	w.Write(req.Target)
	w.WriteString(" HTTP/1.1\r\n")
	for _, l := range req.Lines {
		if !h1.DropRequest(l) {
			w.Write(l)
			w.WriteString("\r\n")
		}
	}
	if clientIP != "" {
		w.WriteString("X-Forwarded-For: ")
		w.WriteString(clientIP)
		w.WriteString("\r\n")
	}
	w.WriteString("X-Forwarded-Host: ")
	w.Write(req.Host)
	w.WriteString("\r\nX-Forwarded-Proto: http\r\n")
	if req.HasLength {
		w.WriteString("Content-Length: ")
		writeInt(w, req.ContentLength)
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
}

// headWriter is where heads are written: a connection's bufio.Writer, or
// an event loop's bytes.Buffer.
type headWriter interface {
	io.Writer
	io.StringWriter
	io.ByteWriter
}

// writeInt writes n in decimal without the string strconv.Itoa allocates.
func writeInt(w headWriter, n int64) {
	var b [20]byte
	w.Write(strconv.AppendInt(b[:0], n, 10))
}

// readResponseHead reads the backend's head (skipping interim 1xx
// answers) and returns its length, still unread in br.
func readResponseHead(br *bufio.Reader, resp *h1.Response) (int, error) {
	for {
		n := -1
		for {
			b, _ := br.Peek(br.Buffered())
			if n = h1.HeadEnd(b); n >= 0 {
				if err := h1.ParseResponse(b[:n], resp); err != nil {
					return 0, err
				}
				break
			}
			if len(b) == br.Size() {
				return 0, fmt.Errorf("%w: head longer than %d bytes", h1.ErrBadResponse, br.Size())
			}
			if _, err := br.Peek(len(b) + 1); err != nil {
				if len(b) > 0 && errors.Is(err, io.EOF) {
					return 0, fmt.Errorf("%w: connection closed inside the head", h1.ErrBadResponse)
				}
				return 0, err
			}
		}
		if resp.Status >= 200 {
			return n, nil
		}
		if resp.Status == http.StatusSwitchingProtocols {
			return 0, fmt.Errorf("%w: 101 to a request without Upgrade", h1.ErrBadResponse)
		}
		_, _ = br.Discard(n) // 100 Continue, 103 Early Hints
	}
}

// relayResponse writes the response head and body to the client; keep is
// false when the client's connection must close after it.
func relayResponse(fc *fastConn, req *h1.Request, resp *h1.Response, uc *upConn, headLen int) (keep bool, err error) {
	noBody := h1.NoBody(req.Method, resp.Status)
	keep = !req.Close
	w := fc.bw
	writeResponseHead(w, req, resp)
	_, _ = uc.br.Discard(headLen)
	switch {
	case noBody:
	case resp.ContentLength >= 0:
		if err = copyN(w, uc.br, resp.ContentLength); err != nil {
			return false, err
		}
	default:
		if err = relayStream(w, resp, uc.br); err != nil {
			return false, err
		}
	}
	if err = w.Flush(); err != nil {
		return false, err
	}
	return keep, nil
}

// writeResponseHead writes the head the client gets: the status line, the
// backend's headers but hop-by-hop ones, the body's framing.
func writeResponseHead(w headWriter, req *h1.Request, resp *h1.Response) {
	noBody := h1.NoBody(req.Method, resp.Status)
	w.WriteString("HTTP/1.1 ")
	writeInt(w, int64(resp.Status))
	w.WriteByte(' ')
	if len(resp.Reason) > 0 {
		w.Write(resp.Reason)
	} else {
		w.WriteString(http.StatusText(resp.Status))
	}
	w.WriteString("\r\n")
	for _, l := range resp.Lines {
		if !h1.DropResponse(l) {
			w.Write(l)
			w.WriteString("\r\n")
		}
	}
	switch {
	case resp.ContentLength >= 0 && resp.Status != http.StatusNoContent:
		w.WriteString("Content-Length: ")
		writeInt(w, resp.ContentLength)
		w.WriteString("\r\n")
	case !noBody:
		w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if req.Close {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
}

// copyN copies n bytes from r's buffer, filling it as needed (io.CopyN
// would allocate a LimitReader per body).
func copyN(w *bufio.Writer, r *bufio.Reader, n int64) error {
	for n > 0 {
		if r.Buffered() == 0 {
			if _, err := r.Peek(1); err != nil {
				if errors.Is(err, io.EOF) {
					return io.ErrUnexpectedEOF
				}
				return err
			}
		}
		b, _ := r.Peek(int(min(n, int64(r.Buffered()))))
		if _, err := w.Write(b); err != nil {
			return err
		}
		_, _ = r.Discard(len(b))
		n -= int64(len(b))
	}
	return nil
}

// relayStream copies a body of unknown length (chunked, or until the
// backend closes) as chunks, flushed as they come (server-sent events,
// streamed responses), then the backend's trailers.
func relayStream(w *bufio.Writer, resp *h1.Response, br *bufio.Reader) error {
	var src io.Reader = br
	if resp.Chunked {
		src = httputil.NewChunkedReader(br)
	}
	cw := httputil.NewChunkedWriter(w)
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	for {
		n, err := src.Read(*buf)
		if n > 0 {
			if _, werr := cw.Write((*buf)[:n]); werr != nil {
				return werr
			}
			if werr := w.Flush(); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if err := cw.Close(); err != nil { // the last chunk, "0\r\n"
		return err
	}
	if resp.Chunked {
		return relayTrailers(w, br)
	}
	_, err := w.WriteString("\r\n")
	return err
}

// relayTrailers passes the trailer section (well-formed lines only) and
// its blank line.
func relayTrailers(w *bufio.Writer, br *bufio.Reader) error {
	for n := 0; ; n++ {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if n > 100 || len(line) < 2 || line[len(line)-2] != '\r' {
			return h1.ErrBadResponse
		}
		line = line[:len(line)-2]
		if len(line) == 0 {
			_, err = w.WriteString("\r\n")
			return err
		}
		if h1.ValidHeaderLine(line) && !h1.DropResponse(line) {
			w.Write(line)
			w.WriteString("\r\n")
		}
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
