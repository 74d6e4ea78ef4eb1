package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// errHelloRead stops the handshake once the ClientHello is read.
var errHelloRead = errors.New("client hello read")

// recordingConn reads from a connection and keeps what it read; writes
// go nowhere (the handshake is stopped before it would answer).
type recordingConn struct {
	net.Conn
	buf bytes.Buffer
}

func (c *recordingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.buf.Write(b[:n])
	return n, err
}

func (c *recordingConn) Write(b []byte) (int, error) { return len(b), nil }

// serverName reads a TLS ClientHello with crypto/tls's own parser (a
// handshake stopped at GetConfigForClient) and returns its SNI and the
// bytes read, which go to the backend first.
func serverName(c net.Conn) (string, []byte, error) {
	rc := &recordingConn{Conn: c}
	var sni string
	got := false
	err := tls.Server(rc, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		sni, got = h.ServerName, true
		return nil, errHelloRead
	}}).Handshake()
	if !got {
		return "", nil, err
	}
	return sni, rc.buf.Bytes(), nil
}

// servePassthrough accepts TLS connections on a Gateway port whose
// listeners pass TLS through: each goes, by its SNI, to a backend of the
// TLSRoute that takes the name, bytes copied both ways unread.
func (p *Proxy) servePassthrough(l net.Listener, port int) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go p.passThrough(c, port)
	}
}

func (p *Proxy) passThrough(c net.Conn, port int) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	sni, hello, err := serverName(c)
	if err != nil || sni == "" {
		p.log.Debug("TLS passthrough: no server name", "port", port, "client", c.RemoteAddr(), "err", err)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	s := p.snap.Load()
	pt := s.Ports[port]
	if pt == nil {
		return
	}
	table := pt.tableFor(sni)
	if table == nil {
		return
	}
	_, rule, ok := table.MatchRequest(&http.Request{Host: sni, URL: &url.URL{Path: "/"}})
	if !ok || rule == nil {
		return
	}
	wb := rule.PickRandom()
	if wb == nil || wb.Invalid {
		return
	}
	addrs := p.order(s.Endpoints[wb.Backend])
	var up net.Conn
	for _, a := range addrs {
		if up, err = net.DialTimeout("tcp", a, p.cfg.DialTimeout); err == nil {
			break
		}
		p.eject(a)
	}
	if up == nil {
		p.log.Warn("TLS passthrough: no endpoint took the connection", "sni", sni, "route", rule.Source, "err", err)
		return
	}
	defer up.Close()
	if _, err := up.Write(hello); err != nil {
		return
	}
	splice(c, up)
}

// splice copies both ways until either side ends, then closes the other
// side's write half.
func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	copyHalf := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}
	wg.Add(2)
	go copyHalf(a, b)
	go copyHalf(b, a)
	wg.Wait()
}
