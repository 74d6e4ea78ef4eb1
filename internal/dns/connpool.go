package dns

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/miekg/dns"
)

// DefaultIdleConns is how many idle TCP connections a Forwarder keeps per
// upstream.
const DefaultIdleConns = 16

// maxIdleAge retires idle connections before the upstream's idle timeout
// (weft dns: 10 s) closes them under us.
const maxIdleAge = 5 * time.Second

// connPool keeps TCP connections to one upstream for reuse, one query at a
// time on each. Connections beyond the idle capacity are closed after use.
type connPool struct {
	addr string
	idle chan *pooledConn
}

type pooledConn struct {
	*dns.Conn
	used time.Time
}

// exchange sends req over an idle connection or a new one. A reused
// connection may have been closed by the upstream meanwhile: then the query
// is retried once on a fresh connection.
func (p *connPool) exchange(ctx context.Context, req *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for {
		c, reused := p.idleConn()
		if c == nil {
			var err error
			if c, err = p.dial(ctx, deadline); err != nil {
				return nil, err
			}
		}
		resp, err := roundTrip(c, req, deadline)
		if err == nil {
			p.release(c)
			return resp, nil
		}
		_ = c.Close()
		if !reused || ctx.Err() != nil {
			return nil, err
		}
	}
}

func (p *connPool) idleConn() (*pooledConn, bool) {
	for {
		select {
		case c := <-p.idle:
			if time.Since(c.used) < maxIdleAge {
				return c, true
			}
			_ = c.Close()
		default:
			return nil, false
		}
	}
}

func (p *connPool) dial(ctx context.Context, deadline time.Time) (*pooledConn, error) {
	d := net.Dialer{Deadline: deadline}
	nc, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	return &pooledConn{Conn: &dns.Conn{Conn: nc}}, nil
}

func (p *connPool) release(c *pooledConn) {
	c.used = time.Now()
	select {
	case p.idle <- c:
	default:
		_ = c.Close()
	}
}

func roundTrip(c *pooledConn, req *dns.Msg, deadline time.Time) (*dns.Msg, error) {
	if err := c.SetDeadline(deadline); err != nil {
		return nil, err
	}
	if err := c.WriteMsg(req); err != nil {
		return nil, err
	}
	for {
		resp, err := c.ReadMsg()
		if err != nil {
			return nil, err
		}
		// A late answer to an earlier query that timed out on this
		// connection is skipped, never taken for this one.
		if resp.Id == req.Id {
			return resp, nil
		}
		if !resp.Response {
			return nil, errors.New("upstream sent a query, not a response")
		}
	}
}
