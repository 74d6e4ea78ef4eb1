package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"weft.dev/weft/internal/ingress/route"
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
// bytes read, which go on to the backend or to the real handshake.
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

// serveTLSRoutes accepts connections on a Gateway port of TLS listeners:
// each goes, by its SNI, to a backend of the TLSRoute that takes the
// name, passed through unread or decrypted here first (Terminate).
func (p *Proxy) serveTLSRoutes(l net.Listener, port int) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go p.serveTLSRoute(c, port)
	}
}

func (p *Proxy) serveTLSRoute(c net.Conn, port int) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	sni, hello, err := serverName(c)
	if err != nil {
		p.log.Debug("TLSRoute: no ClientHello", "port", port, "client", c.RemoteAddr(), "err", err)
		return
	}
	s := p.snap.Load()
	pt := s.Ports[port]
	if pt == nil {
		return
	}
	i := route.MostSpecific(strings.ToLower(sni), pt.Hostnames)
	if i < 0 {
		return
	}
	_, rule, ok := pt.Tables[i].MatchRequest(&http.Request{Host: sni, URL: &url.URL{Path: "/"}})
	if !ok || rule == nil {
		return
	}
	wb := rule.PickRandom()
	if wb == nil || wb.Invalid {
		return
	}
	client, first := c, hello
	if i < len(pt.Terminate) && pt.Terminate[i] {
		cert := pt.Certs[pt.Hostnames[i]]
		tc := tls.Server(&replayConn{Conn: c, pre: hello},
			&tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert}})
		if err := tc.Handshake(); err != nil {
			p.log.Debug("TLSRoute: handshake failed", "sni", sni, "client", c.RemoteAddr(), "err", err)
			return
		}
		client, first = tc, nil
	}
	_ = c.SetReadDeadline(time.Time{})
	up := p.dialAny(s.Endpoints[wb.Backend])
	if up == nil {
		p.log.Warn("TLSRoute: no endpoint took the connection", "sni", sni, "route", rule.Source)
		return
	}
	defer up.Close()
	if len(first) > 0 {
		if _, err := up.Write(first); err != nil {
			return
		}
	}
	splice(client, up)
}

// dialAny connects to the first endpoint that answers, ejecting those
// that do not (nil: none did).
func (p *Proxy) dialAny(addrs []string) net.Conn {
	for _, a := range p.order(addrs) {
		if up, err := net.DialTimeout("tcp", a, p.cfg.DialTimeout); err == nil {
			return up
		}
		p.eject(a)
	}
	return nil
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
