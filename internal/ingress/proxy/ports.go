package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"weft.dev/weft/internal/ingress/route"
)

// openPort is a Gateway listener port the proxy listens on.
type openPort struct {
	tls, stream bool
	srv         *http.Server // nil for TLSRoutes' ports
	l           net.Listener
}

// RunPorts listens on the Gateway listener ports of the current snapshot,
// opening and closing them as snapshots are swapped, until ctx ends.
// newServer makes the server of a port (timeouts, protocols); host is the
// address to listen on ("" for all).
func (p *Proxy) RunPorts(ctx context.Context, host string, newServer func() *http.Server) {
	open := map[int]*openPort{}
	defer func() {
		for _, op := range open {
			closePort(op)
		}
	}()
	for {
		p.syncPorts(host, open, newServer)
		select {
		case <-ctx.Done():
			return
		case <-p.swapped:
		}
	}
}

func (p *Proxy) syncPorts(host string, open map[int]*openPort, newServer func() *http.Server) {
	want := p.snap.Load().Ports
	for port, op := range open {
		if pt := want[port]; pt == nil || pt.TLS != op.tls || pt.Stream != op.stream {
			closePort(op)
			delete(open, port)
		}
	}
	for port, pt := range want {
		if open[port] != nil {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			p.log.Error("cannot listen on a Gateway listener's port; trying again in a second", "port", port, "err", err)
			time.AfterFunc(time.Second, p.portsChanged)
			continue
		}
		if pt.Stream {
			open[port] = &openPort{stream: true, l: l}
			go p.serveTLSRoutes(l, port)
			p.log.Info("listening for a Gateway", "port", port, "tls", "TLSRoute")
			continue
		}
		srv := newServer()
		srv.Handler = p
		if pt.TLS {
			base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"},
				GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) { return p.portCert(port, hello.ServerName) }}
			srv.TLSConfig = base.Clone()
			srv.TLSConfig.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return p.portTLS(port, base), nil }
			l = tls.NewListener(l, srv.TLSConfig)
		}
		open[port] = &openPort{tls: pt.TLS, srv: srv, l: l}
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				p.log.Error("Gateway listener port stopped", "port", port, "err", err)
			}
		}()
		p.log.Info("listening for a Gateway", "port", port, "tls", pt.TLS)
	}
}

// portsChanged makes RunPorts look at the snapshot's ports again.
func (p *Proxy) portsChanged() {
	select {
	case p.swapped <- struct{}{}:
	default:
	}
}

// closePort stops accepting at once and lets requests in flight finish.
func closePort(op *openPort) {
	op.l.Close() // at once: the port may be opened again right away
	if op.srv == nil {
		return // TLSRoutes' connections run to their end
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = op.srv.Shutdown(ctx)
	}()
}

// portTLS is the TLS configuration of a port's handshake: base, with the
// client-certificate check the port's Gateway asks for now.
func (p *Proxy) portTLS(port int, base *tls.Config) *tls.Config {
	pt := p.snap.Load().Ports[port]
	if pt == nil || pt.ClientCAs == nil {
		return base
	}
	c := base.Clone()
	c.ClientCAs, c.ClientAuth = pt.ClientCAs, tls.RequireAndVerifyClientCert
	if pt.ClientCertOptional {
		c.ClientAuth = tls.RequestClientCert // asked for, never refused
	}
	return c
}

// portCert is the certificate of the listener a TLS client's server name
// goes to on a port; without a server name, or one no listener takes,
// the port's first listener's by hostname.
func (p *Proxy) portCert(port int, serverName string) (*tls.Certificate, error) {
	pt := p.snap.Load().Ports[port]
	if pt == nil || len(pt.Certs) == 0 {
		return nil, errors.New("no certificate on this port")
	}
	if i := route.MostSpecific(strings.ToLower(serverName), pt.Hostnames); i >= 0 {
		if c := pt.Certs[pt.Hostnames[i]]; c != nil {
			return c, nil
		}
	}
	names := make([]string, 0, len(pt.Certs))
	for h := range pt.Certs {
		names = append(names, h)
	}
	sort.Strings(names)
	return pt.Certs[names[0]], nil
}
