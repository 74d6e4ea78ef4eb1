package dns

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// maxChase bounds CNAME chains we follow for ExternalName services.
const maxChase = 8

// Handler answers DNS messages: names in the zone (and reverse names of
// cluster addresses) from the current Snapshot, everything else through the
// Cache and the Forwarder. The node-local cache uses it without a zone: then
// everything is forwarded (to the cluster DNS) and stale entries are served
// when that fails.
type Handler struct {
	Zone    string // "" for a pure forwarding cache
	Forward *Forwarder
	Cache   *Cache
	Metrics *Metrics
	Server  string // metrics label: "cluster" or "node-local"
	// MaxUDPSize caps UDP replies whatever buffer the client's EDNS offers
	// (0: DefaultMaxUDPSize): large UDP answers are what reflection attacks
	// are made of, and fragments get lost.
	MaxUDPSize int
	// MaxTCPConns caps open TCP connections (0: DefaultMaxTCPConns).
	MaxTCPConns int
	// Limit, when set, drops queries of clients above their rate.
	Limit *ClientLimiter
	// MaxPending bounds UDP queries waiting for an upstream (0:
	// DefaultMaxPending).
	MaxPending int
	// Observe, when set, sees every response before it is sent, on every
	// path (UDP loop, forwarded, TCP): the policy's domain-name learner,
	// since the client may connect the moment it has the answer.
	Observe  func(ctx context.Context, resp *dns.Msg)
	pending  atomic.Int64
	snapshot atomic.Pointer[Snapshot]
	wire     wireAnswers
}

// DefaultMaxUDPSize is the DNS flag day 2020 value: safe from fragmentation.
const DefaultMaxUDPSize = 1232

// DefaultMaxTCPConns bounds TCP connections when MaxTCPConns is 0.
const DefaultMaxTCPConns = 256

func (h *Handler) maxUDPSize() int {
	if h.MaxUDPSize <= 0 {
		return DefaultMaxUDPSize
	}
	return max(h.MaxUDPSize, dns.MinMsgSize)
}

// SetSnapshot installs the records to answer from. Until the first call,
// names in the zone get SERVFAIL: an empty answer would be cached by clients
// as a lie.
func (h *Handler) SetSnapshot(s *Snapshot) { h.snapshot.Store(s) }

// Synced reports whether a snapshot is installed (readiness).
func (h *Handler) Synced() bool { return h.Zone == "" || h.snapshot.Load() != nil }

// ServeDNS implements dns.Handler.
func (h *Handler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	start := time.Now()
	if !h.Limit.Allow(w.RemoteAddr()) {
		h.Metrics.dropped(h.Server, "rate-limit")
		return
	}
	tcp := w.LocalAddr() != nil && w.LocalAddr().Network() == "tcp"
	resp, ok := h.RespondLocal(req, tcp)
	if !ok {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp = h.Respond(ctx, req, tcp)
		cancel()
	}
	if resp == nil {
		h.Metrics.dropped(h.Server, "response")
		return
	}
	if err := w.WriteMsg(resp); err != nil {
		h.Metrics.writeError(h.Server)
	}
	h.Metrics.observe(h.Server, req, resp, time.Since(start))
}

// Respond builds the reply to req. tcp lifts the UDP size limit. It is nil
// when req must not be answered: a message that is itself a response (QR=1)
// gets nothing, or two servers and one spoofed packet answer each other
// forever.
func (h *Handler) Respond(ctx context.Context, req *dns.Msg, tcp bool) *dns.Msg {
	m, _, _ := h.respond(ctx, req, tcp, false)
	h.observe(ctx, m)
	return m
}

// RespondLocal is Respond for answers that need no upstream: cluster names
// and fresh cache hits. ok is false when the query must be forwarded.
func (h *Handler) RespondLocal(req *dns.Msg, tcp bool) (m *dns.Msg, ok bool) {
	m, ok, _ = h.respondLocal(req, tcp)
	return m, ok
}

// respondLocal is RespondLocal; static says the response depends on the
// snapshot alone (see Result.Static).
func (h *Handler) respondLocal(req *dns.Msg, tcp bool) (m *dns.Msg, ok, static bool) {
	m, ok, static = h.respond(context.Background(), req, tcp, true)
	if ok {
		h.observe(context.Background(), m)
	}
	return m, ok, static
}

// observe shows a response about to be sent to Observe.
func (h *Handler) observe(ctx context.Context, m *dns.Msg) {
	if h.Observe != nil && m != nil {
		h.Observe(ctx, m)
	}
}

func (h *Handler) respond(ctx context.Context, req *dns.Msg, tcp, local bool) (m *dns.Msg, ok, static bool) {
	m = new(dns.Msg)
	opt := req.IsEdns0()
	switch {
	case req.Response:
		return nil, true, false
	case req.Opcode != dns.OpcodeQuery:
		m.SetRcode(req, dns.RcodeNotImplemented)
		return m, true, false
	case len(req.Question) != 1:
		m.SetRcodeFormatError(req)
		return m, true, false
	case opt != nil && opt.Version() != 0:
		// RFC 6891 §6.1.3: answer BADVERS with our version (0).
		m.SetRcode(req, dns.RcodeBadVers)
		m.SetEdns0(uint16(h.maxUDPSize()), false)
		return m, true, false
	}
	q := req.Question[0]
	do := opt != nil && opt.Do()
	m.SetReply(req)
	m.RecursionAvailable = true
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Rcode = dns.RcodeRefused
	} else {
		r := h.resolve(ctx, q, do, 0, local)
		if r.needForward {
			return nil, false, false
		}
		static = r.static
		m.Rcode, m.Authoritative = r.rcode, r.authoritative
		m.Answer, m.Ns, m.Extra = r.answer, r.ns, r.extra
	}
	if opt != nil {
		m.SetEdns0(uint16(h.maxUDPSize()), do)
	}
	m.Truncate(h.replySize(opt, tcp))
	return m, true, static
}

// replySize is the largest reply the client may get: 512 bytes without
// EDNS, the client's buffer capped by MaxUDPSize with it, anything on TCP.
func (h *Handler) replySize(opt *dns.OPT, tcp bool) int {
	if tcp {
		return dns.MaxMsgSize
	}
	if opt == nil {
		return dns.MinMsgSize
	}
	return min(max(int(opt.UDPSize()), dns.MinMsgSize), h.maxUDPSize())
}

type resolved struct {
	rcode             int
	authoritative     bool
	answer, ns, extra []dns.RR
	needForward       bool // local-only resolution hit a name only an upstream knows
	static            bool // from the snapshot alone (Result.Static)
}

func (h *Handler) resolve(ctx context.Context, q dns.Question, do bool, depth int, local bool) resolved {
	snap := h.snapshot.Load()
	if h.Zone != "" && snap == nil && inZone(q.Name, h.Zone) {
		return resolved{rcode: dns.RcodeServerFailure}
	}
	if snap != nil {
		if res, ours := snap.Resolve(q); ours {
			out := resolved{rcode: res.Rcode, authoritative: true, answer: res.Answer, ns: res.Ns, extra: res.Extra, static: res.Static}
			if res.Chase != "" && depth < maxChase {
				next := h.resolve(ctx, dns.Question{Name: res.Chase, Qtype: q.Qtype, Qclass: q.Qclass}, do, depth+1, local)
				if next.needForward {
					return next
				}
				out.rcode = next.rcode
				out.answer = append(out.answer, next.answer...)
				out.ns = next.ns
				out.authoritative = out.authoritative && next.authoritative
			}
			return out
		}
	}
	return h.forward(ctx, q, do, local)
}

func (h *Handler) forward(ctx context.Context, q dns.Question, do, local bool) resolved {
	var stale *dns.Msg
	if h.Cache != nil {
		if m, fresh, ok := h.Cache.Get(q, do); ok {
			if fresh {
				h.Metrics.cache(h.Server, "hit")
				return fromMsg(m)
			}
			stale = m
		}
		if local {
			return resolved{needForward: true} // counted when forwarded
		}
		h.Metrics.cache(h.Server, "miss")
	}
	if local && h.Forward != nil {
		return resolved{needForward: true}
	}
	if h.Forward == nil {
		return resolved{rcode: dns.RcodeRefused}
	}
	resp, err := h.Forward.Exchange(ctx, q, do)
	if err != nil {
		h.Metrics.forwardError(h.Server)
		if stale != nil {
			h.Metrics.cache(h.Server, "stale")
			return fromMsg(stale)
		}
		return resolved{rcode: dns.RcodeServerFailure}
	}
	if h.Cache != nil {
		h.Cache.Put(q, do, resp)
	}
	return fromMsg(resp)
}

func fromMsg(m *dns.Msg) resolved {
	return resolved{rcode: m.Rcode, authoritative: false, answer: m.Answer, ns: m.Ns, extra: withoutOPT(m.Extra)}
}

func inZone(name, zone string) bool {
	name = strings.ToLower(dns.Fqdn(name))
	zone = strings.ToLower(dns.Fqdn(zone))
	return name == zone || strings.HasSuffix(name, "."+zone)
}
