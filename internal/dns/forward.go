package dns

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"
)

// UpstreamBufSize is the EDNS0 buffer size we offer upstreams: the DNS flag
// day 2020 value, safe from IP fragmentation.
const UpstreamBufSize = 1232

// DefaultMaxInflight bounds distinct questions at the upstreams at once.
const DefaultMaxInflight = 1000

// ErrBusy is returned when MaxInflight questions are already upstream.
var ErrBusy = errors.New("too many queries in flight upstream")

// Forwarder sends questions to upstream resolvers in order until one
// answers. Over UDP it falls back to TCP when the answer is truncated;
// with TCPOnly it always uses TCP (the node-local cache does, so its
// queries to the cluster DNS never race in conntrack) over connections it
// keeps open, so a burst of misses does not use up the node's source ports.
// Identical questions in flight are asked once; at most MaxInflight
// distinct ones are upstream at a time, more fail at once with ErrBusy.
type Forwarder struct {
	Upstreams   []string // host:port
	Timeout     time.Duration
	TCPOnly     bool
	MaxInflight int // 0: DefaultMaxInflight
	MaxConns    int // TCP connections open per upstream at most, kept for reuse (0: DefaultMaxConns)

	flight   singleflight.Group
	initOnce sync.Once
	slots    chan struct{}
	pools    sync.Map // upstream → *connPool
}

// Exchange asks upstreams for q with recursion desired and the client's DO
// bit. The response's ID and EDNS are the forwarder's, not the client's.
func (f *Forwarder) Exchange(ctx context.Context, q dns.Question, do bool) (*dns.Msg, error) {
	if len(f.Upstreams) == 0 {
		return nil, errors.New("no upstream resolvers configured")
	}
	f.initOnce.Do(func() {
		n := f.MaxInflight
		if n <= 0 {
			n = DefaultMaxInflight
		}
		f.slots = make(chan struct{}, n)
	})
	key := strings.ToLower(q.Name) + "/" + strconv.Itoa(int(q.Qtype)) + "/" + strconv.Itoa(int(q.Qclass)) + "/" + strconv.FormatBool(do)
	v, err, shared := f.flight.Do(key, func() (any, error) {
		select {
		case f.slots <- struct{}{}:
		default:
			return nil, ErrBusy
		}
		defer func() { <-f.slots }()
		return f.exchange(ctx, q, do)
	})
	if err != nil {
		return nil, err
	}
	m := v.(*dns.Msg)
	if shared {
		m = m.Copy() // each caller may edit its own reply
	}
	return m, nil
}

func (f *Forwarder) exchange(ctx context.Context, q dns.Question, do bool) (*dns.Msg, error) {
	req := new(dns.Msg)
	req.SetQuestion(q.Name, q.Qtype)
	req.Question[0].Qclass = q.Qclass
	req.RecursionDesired = true
	req.SetEdns0(UpstreamBufSize, do)
	timeout := f.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	var errs []error
	for _, up := range f.Upstreams {
		resp, err := f.exchangeOne(ctx, req, up, timeout)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", up, err))
	}
	return nil, errors.Join(errs...)
}

func (f *Forwarder) exchangeOne(ctx context.Context, req *dns.Msg, upstream string, timeout time.Duration) (*dns.Msg, error) {
	if f.TCPOnly {
		resp, err := f.pool(upstream).exchange(ctx, req, timeout)
		if err != nil {
			return nil, err
		}
		return checkReply(req, resp)
	}
	c := &dns.Client{Net: "udp", Timeout: timeout, UDPSize: UpstreamBufSize}
	resp, _, err := c.ExchangeContext(ctx, req, upstream)
	if err != nil {
		return nil, err
	}
	if !resp.Truncated {
		return checkReply(req, resp)
	}
	c = &dns.Client{Net: "tcp", Timeout: timeout}
	if resp, _, err = c.ExchangeContext(ctx, req, upstream); err != nil {
		return nil, err
	}
	return checkReply(req, resp)
}

func (f *Forwarder) pool(upstream string) *connPool {
	if p, ok := f.pools.Load(upstream); ok {
		return p.(*connPool)
	}
	n := f.MaxConns
	if n <= 0 {
		n = DefaultMaxConns
	}
	p, _ := f.pools.LoadOrStore(upstream, newConnPool(upstream, n))
	return p.(*connPool)
}

// checkReply rejects answers to a different question (miekg/dns already
// matches IDs).
func checkReply(req, resp *dns.Msg) (*dns.Msg, error) {
	if len(resp.Question) != 1 || !equalFoldQuestion(resp.Question[0], req.Question[0]) {
		return nil, errors.New("upstream answered another question")
	}
	return resp, nil
}

func equalFoldQuestion(a, b dns.Question) bool {
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && dns.CanonicalName(a.Name) == dns.CanonicalName(b.Name)
}
