package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"weft.dev/weft/internal/ingress/route"
)

// rawBackend answers each request it reads with the next of answers (by
// request index), written verbatim, and sends what it read of every
// request head to heads. closeAfter: it closes each connection after
// that many answers without saying so (a keep-alive timeout).
func rawBackend(t *testing.T, closeAfter int, answers ...string) (string, chan string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	heads := make(chan string, 100)
	var n atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for served := 0; closeAfter == 0 || served < closeAfter; served++ {
					head, req, err := readRawRequest(br)
					if err != nil {
						return
					}
					b, _ := io.ReadAll(req.Body)
					heads <- head + "body=" + string(b)
					c.Write([]byte(answers[(n.Add(1)-1)%int64(len(answers))]))
				}
			}()
		}
	}()
	return l.Addr().String(), heads
}

// readRawRequest reads a request head as sent (names in their case)
// and the request with its body.
func readRawRequest(br *bufio.Reader) (string, *http.Request, error) {
	var head strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", nil, err
		}
		head.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head.String())))
	if err != nil {
		return "", nil, err
	}
	switch {
	case len(req.TransferEncoding) > 0:
		b, _ := io.ReadAll(httputil.NewChunkedReader(br))
		_, _ = br.ReadString('\n') // the empty trailer section
		req.Body = io.NopCloser(strings.NewReader(string(b)))
	default:
		req.Body = io.NopCloser(io.LimitReader(br, req.ContentLength))
	}
	return head.String(), req, nil
}

// exchange sends raw bytes on one connection to the proxy and reads n
// responses.
func exchangeRaw(t *testing.T, url, raw string, n int, method string) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []*http.Response
	for i := 0; i < n; i++ {
		req, _ := http.NewRequest(method, "http://x/", nil)
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("response %d body: %v", i, err)
		}
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		resp.Request = nil
		out = append(out, resp)
	}
	return out
}

func body(r *http.Response) string { b, _ := io.ReadAll(r.Body); return string(b) }

func plainSnapshot(addrs ...string) *Snapshot {
	return &Snapshot{Table: table(map[string]route.Backend{"/": web}), Endpoints: map[route.Backend][]string{web: addrs}}
}

// Plain requests go the fast path: headers as written (a lowercase name
// stays lowercase, which net/http would have made canonical), hop-by-hop
// and the client's forwarding headers dropped, weft's added, a body
// passed; hop-by-hop headers of the response dropped too. Two requests
// pipelined on one connection are answered in order.
func TestFastPathForwardsPlainRequests(t *testing.T) {
	p, front := newProxy(t)
	addr, heads := rawBackend(t, 0,
		"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\nX-App: 1\r\nContent-Length: 5\r\n\r\nfirst",
		"HTTP/1.1 201 Created\r\nContent-Length: 6\r\n\r\nsecond")
	p.Swap(plainSnapshot(addr))
	raw := "GET /a?b=c HTTP/1.1\r\nHost: app.example.com\r\nx-lower: v\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n" +
		"Connection: keep-alive\r\nKeep-Alive: 300\r\nProxy-Connection: x\r\nTE: trailers\r\n\r\n" +
		"POST /p HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 4\r\n\r\nbody"
	resps := exchangeRaw(t, front.URL, raw, 2, "GET")
	first := <-heads
	for _, want := range []string{"GET /a?b=c HTTP/1.1\r\n", "\r\nx-lower: v\r\n", "X-Forwarded-For: 127.0.0.1\r\n", "X-Forwarded-Host: app.example.com\r\n", "X-Forwarded-Proto: http\r\n"} {
		if !strings.Contains(first, want) {
			t.Errorf("backend got %q, want %q in it", first, want)
		}
	}
	for _, gone := range []string{"6.6.6.6", "Keep-Alive", "Proxy-Connection", "Te:", "Connection"} {
		if strings.Contains(first, gone) {
			t.Errorf("backend got %q: %q should have been dropped", first, gone)
		}
	}
	if second := <-heads; !strings.HasPrefix(second, "POST /p HTTP/1.1\r\n") || !strings.HasSuffix(second, "body=body") {
		t.Errorf("second request at the backend: %q", second)
	}
	if r := resps[0]; r.StatusCode != 200 || body(r) != "first" || r.Header.Get("X-App") != "1" || r.Header.Get("Keep-Alive") != "" {
		t.Errorf("first response %d %v", r.StatusCode, r.Header)
	}
	if r := resps[1]; r.StatusCode != 201 || body(r) != "second" {
		t.Errorf("second response %d", r.StatusCode)
	}
}

// A backend that closes idle connections unannounced: a request that
// meets such a pooled connection goes again on a new one.
func TestFastPathRetriesClosedPooledConnection(t *testing.T) {
	p, front := newProxy(t)
	addr, _ := rawBackend(t, 1, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	p.Swap(plainSnapshot(addr))
	raw := strings.Repeat("GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n", 5)
	for i, r := range exchangeRaw(t, front.URL, raw, 5, "GET") {
		if r.StatusCode != 200 || body(r) != "ok" {
			t.Errorf("request %d: %d", i, r.StatusCode)
		}
	}
}

// Bodies of unknown length arrive whole: chunked (with its trailers) and
// until the backend closes; HEAD and 204 carry none.
func TestFastPathBodies(t *testing.T) {
	for _, c := range []struct {
		name, answer, method string
		want                 string
		trailer              string
	}{
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n", "GET", "abcde", "5"},
		{"until close", "HTTP/1.1 200 OK\r\n\r\nall of it", "GET", "all of it", ""},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\n\r\nold", "GET", "old", ""},
		{"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "HEAD", "", ""},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", "GET", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, front := newProxy(t)
			closeAfter := 0
			if !strings.Contains(c.answer, "Length") && !strings.Contains(c.answer, "chunked") && c.method == "GET" && !strings.Contains(c.answer, "204") {
				closeAfter = 1
			}
			addr, _ := rawBackend(t, closeAfter, c.answer)
			p.Swap(plainSnapshot(addr))
			raw := c.method + " / HTTP/1.1\r\nHost: app.example.com\r\n\r\n"
			rs := exchangeRaw(t, front.URL, raw+raw, 2, c.method) // the connection survives for a second
			for i, r := range rs {
				if r.StatusCode/100 != 2 || body(r) != c.want || r.Trailer.Get("X-Sum") != c.trailer {
					t.Errorf("response %d: %d %v trailer %v", i, r.StatusCode, r.Header, r.Trailer)
				}
			}
			if c.method == "HEAD" && rs[0].ContentLength != 10 {
				t.Errorf("HEAD: Content-Length %d, want the backend's 10", rs[0].ContentLength)
			}
		})
	}
}

// A backend whose response frames its body two ways gets 502, never a
// guess.
func TestFastPathRefusesAmbiguousResponse(t *testing.T) {
	p, front := newProxy(t)
	addr, _ := rawBackend(t, 0, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc")
	p.Swap(plainSnapshot(addr))
	if r := exchangeRaw(t, front.URL, "GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n", 1, "GET")[0]; r.StatusCode != http.StatusBadGateway {
		t.Errorf("got %d, want 502", r.StatusCode)
	}
}

// What the fast path does not take goes to net/http on the same
// connection, the bytes already read included: a percent-encoded path is
// routed on its decoded form, a chunked request body arrives.
func TestHandoffKeepsTheRequest(t *testing.T) {
	p, front := newProxy(t)
	addr, heads := rawBackend(t, 0, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	p.Swap(plainSnapshot(addr))
	raw := "GET /a%2Fb HTTP/1.1\r\nHost: app.example.com\r\nx-lower: v\r\n\r\n" +
		"POST /c HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
	for i, r := range exchangeRaw(t, front.URL, raw, 2, "GET") {
		if r.StatusCode != 200 {
			t.Errorf("request %d: %d", i, r.StatusCode)
		}
	}
	if h := <-heads; !strings.HasPrefix(h, "GET /a%2Fb HTTP/1.1\r\n") || !strings.Contains(h, "\r\nX-Lower: v\r\n") {
		t.Errorf("first request (net/http's, canonical names): %q", h)
	}
	if h := <-heads; !strings.HasPrefix(h, "POST /c HTTP/1.1\r\n") || !strings.HasSuffix(h, "body=abc") {
		t.Errorf("second request: %q", h)
	}
}

// Bodies longer than every buffer pass whole both ways; a body cut short
// is an error, never a shorter success.
func TestCopyNAcrossBuffers(t *testing.T) {
	src := append(bytes.Repeat([]byte("0123456789abcdef"), 4096), "odd tail"...)
	var out bytes.Buffer
	w := bufio.NewWriterSize(&out, 16)
	r := bufio.NewReaderSize(bytes.NewReader(append(bytes.Clone(src), "next message"...)), 16)
	if err := copyN(w, r, int64(len(src))); err != nil || w.Flush() != nil || !bytes.Equal(out.Bytes(), src) {
		t.Fatalf("copyN: err %v, %d bytes of %d, equal %v", err, out.Len(), len(src), bytes.Equal(out.Bytes(), src))
	}
	if rest, _ := io.ReadAll(r); string(rest) != "next message" {
		t.Fatalf("after the body: %q, want the next message untouched", rest)
	}
	out.Reset()
	if err := copyN(w, bufio.NewReaderSize(bytes.NewReader(src[:100]), 16), 101); err == nil {
		t.Fatal("copyN of 101 bytes from 100: no error")
	}
}

func TestFastPathLongBodies(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	}))
	defer be.Close()
	p, srv := newProxy(t)
	p.Swap(&Snapshot{Table: table(map[string]route.Backend{"/": web}), Endpoints: map[route.Backend][]string{web: {strings.TrimPrefix(be.URL, "http://")}}})
	body := bytes.Repeat([]byte("weft "), 200<<10/5)
	for range 2 { // the second on the pooled connection
		req, _ := http.NewRequest("POST", srv.URL+"/echo", bytes.NewReader(body))
		req.Host = "app.example.com"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, body) {
			t.Fatalf("echo of %d bytes: %d, %d bytes back, err %v", len(body), resp.StatusCode, len(got), err)
		}
	}
}

// The fast path's timeouts: a head that stalls is cut after the header
// timeout, an idle connection after the idle timeout, and a connection
// that keeps sending requests is never cut.
func TestFastPathTimeouts(t *testing.T) {
	idle, header := fastIdleTimeout, fastHeaderTimeout
	fastIdleTimeout, fastHeaderTimeout = 400*time.Millisecond, 200*time.Millisecond
	t.Cleanup(func() { fastIdleTimeout, fastHeaderTimeout = idle, header })
	addr, _ := rawBackend(t, 0, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	p, srv := newProxy(t)
	p.Swap(&Snapshot{Table: table(map[string]route.Backend{"/": web}), Endpoints: map[route.Backend][]string{web: {addr}}})
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	ask := func(c net.Conn, br *bufio.Reader) error {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return err
	}
	closedWithin := func(c net.Conn, br *bufio.Reader, d time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, err := br.ReadByte()
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}

	busy, busyR := dial()
	for i := range 12 { // 1.2 s, three idle timeouts
		if err := ask(busy, busyR); err != nil {
			t.Fatalf("request %d on a busy connection: %v", i, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stalled, stalledR := dial()
	io.WriteString(stalled, "GET / HTTP/1.1\r\nHost: app.exa")
	if !closedWithin(stalled, stalledR, 2*time.Second) {
		t.Error("a stalled head was not cut")
	}
	quiet, quietR := dial()
	if err := ask(quiet, quietR); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(quiet, quietR, 2*time.Second) {
		t.Error("an idle connection was not closed")
	}
}

// A backend that sends more than the response it announced: the
// connection is not reused, so the surplus is never taken for the next
// request's response.
func TestFastPathClosesConnectionWithSurplus(t *testing.T) {
	p, front := newProxy(t)
	addr, _ := rawBackend(t, 0,
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
		"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
	p.Swap(plainSnapshot(addr))
	raw := strings.Repeat("GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n", 2)
	resps := exchangeRaw(t, front.URL, raw, 2, "GET")
	if got := body(resps[0]) + " " + body(resps[1]); got != "ok good" {
		t.Errorf("bodies %q, want \"ok good\"", got)
	}
}

// The fast path's tests again with a goroutine per connection
// (--event-loops=false).
func TestGoroutinePerConnection(t *testing.T) {
	goroutinePerConn = true
	t.Cleanup(func() { goroutinePerConn = false })
	for name, test := range map[string]func(*testing.T){
		"ForwardsPlainRequests":         TestFastPathForwardsPlainRequests,
		"RetriesClosedPooledConnection": TestFastPathRetriesClosedPooledConnection,
		"Bodies":                        TestFastPathBodies,
		"RefusesAmbiguousResponse":      TestFastPathRefusesAmbiguousResponse,
		"HandoffKeepsTheRequest":        TestHandoffKeepsTheRequest,
		"LongBodies":                    TestFastPathLongBodies,
		"Timeouts":                      TestFastPathTimeouts,
		"ClosesConnectionWithSurplus":   TestFastPathClosesConnectionWithSurplus,
		"NoEndpointsAndDeadEndpoints":   TestNoEndpointsIs503AndDeadEndpointsAreSkipped,
		"SwapDropsNothing":              TestSwapDropsNothing,
	} {
		t.Run(name, test)
	}
}
