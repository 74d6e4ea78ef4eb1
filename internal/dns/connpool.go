package dns

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// DefaultMaxConns is how many TCP connections a Forwarder opens to one
// upstream at most.
const DefaultMaxConns = 32

// maxIdleAge retires idle connections before the upstream's idle timeout
// (weft dns: 10 s) closes them under us. A variable for tests.
var maxIdleAge = 5 * time.Second

// connPool keeps up to max TCP connections to one upstream, one query at a
// time on each. A connection is kept after use, never closed for lack of
// room: under a burst of misses a pool that closed its extra connections
// would open and close one per query (a TCP handshake, conntrack entry
// and TIME_WAIT each, which cost a node-local cache under a random-name
// flood more than the queries). Past max, a query waits for a connection.
// Idle connections are a stack, the last used taken first: under steady
// load the few connections it needs stay busy and those a burst opened
// age out and close (a queue would keep all of them in turn).
type connPool struct {
	addr  string
	max   int
	mu    sync.Mutex
	idle  []*pooledConn // oldest first
	open  int
	freed chan struct{} // a token per release or close, for queries waiting
}

func newConnPool(addr string, max int) *connPool {
	return &connPool{addr: addr, max: max, freed: make(chan struct{}, max)}
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

// get takes the last used idle connection, else opens one if fewer than
// max are open, else waits for either until the deadline.
func (p *connPool) get(ctx context.Context, deadline time.Time) (*pooledConn, bool, error) {
	var wait *time.Timer
	for {
		c, dial := p.take()
		if c != nil {
			return c, true, nil
		}
		if dial {
			c, err := p.dial(ctx, deadline)
			if err != nil {
				p.closed(nil)
				return nil, false, err
			}
			return c, false, nil
		}
		if wait == nil {
			wait = time.NewTimer(time.Until(deadline))
			defer wait.Stop()
		}
		select {
		case <-p.freed:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-wait.C:
			return nil, false, errors.New("no connection to the upstream free before the deadline")
		}
	}
}

// take pops the last used idle connection (closing those past
// maxIdleAge, the oldest first), or reserves a place for a new one
// (dial true), or says neither (the caller waits).
func (p *connPool) take() (c *pooledConn, dial bool) {
	p.mu.Lock()
	stale := p.retire()
	if n := len(p.idle); n > 0 {
		c = p.idle[n-1]
		p.idle = p.idle[:n-1]
	} else if p.open < p.max {
		p.open++
		dial = true
	}
	p.mu.Unlock()
	for _, s := range stale {
		p.closed(s)
	}
	return c, dial
}

// retire cuts the idle connections past maxIdleAge off the bottom of the
// stack and returns them to close; p.mu is held.
func (p *connPool) retire() []*pooledConn {
	i := 0
	for i < len(p.idle) && time.Since(p.idle[i].used) >= maxIdleAge {
		i++
	}
	if i == 0 {
		return nil
	}
	stale := append([]*pooledConn(nil), p.idle[:i]...)
	p.idle = append(p.idle[:0], p.idle[i:]...)
	return stale
}

func (p *connPool) dial(ctx context.Context, deadline time.Time) (*pooledConn, error) {
	d := net.Dialer{Deadline: deadline}
	nc, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	return &pooledConn{Conn: &dns.Conn{Conn: nc}}, nil
}

// release puts a healthy connection on top of the idle stack.
func (p *connPool) release(c *pooledConn) {
	c.used = time.Now()
	p.mu.Lock()
	p.idle = append(p.idle, c)
	stale := p.retire()
	p.mu.Unlock()
	for _, s := range stale {
		p.closed(s)
	}
	p.signal()
}

// discard closes a connection and frees its place.
func (p *connPool) discard(c *pooledConn) { p.closed(c) }

// closed closes c (nil: a dial that failed) and frees its place.
func (p *connPool) closed(c *pooledConn) {
	if c != nil {
		_ = c.Close()
	}
	p.mu.Lock()
	p.open--
	p.mu.Unlock()
	p.signal()
}

// signal wakes one waiting query, if any; a token left when none waits
// costs a later waiter one more look.
func (p *connPool) signal() {
	select {
	case p.freed <- struct{}{}:
	default:
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
