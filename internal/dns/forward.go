package dns

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/miekg/dns"
)

// UpstreamBufSize is the EDNS0 buffer size we offer upstreams: the DNS flag
// day 2020 value, safe from IP fragmentation.
const UpstreamBufSize = 1232

// Forwarder sends questions to upstream resolvers in order until one
// answers. Over UDP it falls back to TCP when the answer is truncated;
// with TCPOnly it always uses TCP (the node-local cache does, so its
// queries to the cluster DNS never race in conntrack).
type Forwarder struct {
	Upstreams []string // host:port
	Timeout   time.Duration
	TCPOnly   bool
}

// Exchange asks upstreams for q with recursion desired and the client's DO
// bit. The response's ID and EDNS are the forwarder's, not the client's.
func (f *Forwarder) Exchange(ctx context.Context, q dns.Question, do bool) (*dns.Msg, error) {
	if len(f.Upstreams) == 0 {
		return nil, errors.New("no upstream resolvers configured")
	}
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
	if !f.TCPOnly {
		c := &dns.Client{Net: "udp", Timeout: timeout, UDPSize: UpstreamBufSize}
		resp, _, err := c.ExchangeContext(ctx, req, upstream)
		if err != nil {
			return nil, err
		}
		if !resp.Truncated {
			return checkReply(req, resp)
		}
	}
	c := &dns.Client{Net: "tcp", Timeout: timeout}
	resp, _, err := c.ExchangeContext(ctx, req, upstream)
	if err != nil {
		return nil, err
	}
	return checkReply(req, resp)
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
