package dns

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/miekg/dns"
)

// DefaultMaxConns is how many TCP connections a Forwarder opens to one
// upstream at most.
const DefaultMaxConns = 32

// maxIdleAge retires idle connections before the upstream's idle timeout
// (weft dns: 10 s) closes them under us.
const maxIdleAge = 5 * time.Second

// connPool keeps up to max TCP connections to one upstream, one query at a
// time on each. A connection is kept after use, never closed for lack of
// room: under a burst of misses a pool that closed its extra connections
// would open and close one per query (a TCP handshake, conntrack entry
// and TIME_WAIT each, which cost a node-local cache under a random-name
// flood more than the queries). Past max, a query waits for a connection.
type connPool struct {
	addr string
	idle chan *pooledConn // capacity max: every open connection fits
	open chan struct{}    // a token per open connection, capacity max
}

func newConnPool(addr string, max int) *connPool {
	return &connPool{addr: addr, idle: make(chan *pooledConn, max), open: make(chan struct{}, max)}
}

type pooledConn struct {
	*dns.Conn
	used time.Time
}

// exchange sends req over an idle connection or a new one. A reused
// connection may have been closed by the upstream meanwhile: then the query
// is retried on another.
func (p *connPool) exchange(ctx context.Context, req *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for {
		c, reused, err := p.get(ctx, deadline)
		if err != nil {
			return nil, err
		}
		resp, err := roundTrip(c, req, deadline)
		if err == nil {
			p.release(c)
			return resp, nil
		}
		p.discard(c)
		if !reused || ctx.Err() != nil {
			return nil, err
		}
	}
}

// get takes an idle connection, else opens one if fewer than max are
// open, else waits for either until the deadline.
func (p *connPool) get(ctx context.Context, deadline time.Time) (*pooledConn, bool, error) {
	if c := p.idleConn(); c != nil {
		return c, true, nil
	}
	wait := time.NewTimer(time.Until(deadline))
	defer wait.Stop()
	for {
		select {
		case c := <-p.idle:
			if time.Since(c.used) < maxIdleAge {
				return c, true, nil
			}
			p.discard(c)
		case p.open <- struct{}{}:
			c, err := p.dial(ctx, deadline)
			if err != nil {
				<-p.open
				return nil, false, err
			}
			return c, false, nil
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-wait.C:
			return nil, false, errors.New("no connection to the upstream free before the deadline")
		}
	}
}

// idleConn returns an idle connection young enough to trust, or nil.
func (p *connPool) idleConn() *pooledConn {
	for {
		select {
		case c := <-p.idle:
			if time.Since(c.used) < maxIdleAge {
				return c
			}
			p.discard(c)
		default:
			return nil
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

// release returns a healthy connection; the idle channel has room for
// every open one, so this never blocks.
func (p *connPool) release(c *pooledConn) {
	c.used = time.Now()
	p.idle <- c
}

// discard closes a connection and frees its place.
func (p *connPool) discard(c *pooledConn) {
	_ = c.Close()
	<-p.open
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
