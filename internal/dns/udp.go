package dns

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
)

// udpBatch is how many datagrams one recvmmsg/sendmmsg moves.
const udpBatch = 64

// maxQuerySize bounds a query datagram we read; real queries are < 600 bytes.
const maxQuerySize = 4096

// serveUDPBatched answers queries on pc in batches: one recvmmsg reads up to
// udpBatch queries, answers that need no upstream (cluster names, cache
// hits) are built in place and leave in one sendmmsg. Queries that must be
// forwarded are handed to a goroutine so a slow upstream never stalls the
// loop. Compared with a goroutine and two syscalls per query (miekg/dns's
// server, which CoreDNS uses), this is what lets one core answer far more
// cluster names.
func serveUDPBatched(ctx context.Context, pc *net.UDPConn, h *Handler) error {
	conn := ipv4.NewPacketConn(pc)
	in := make([]ipv4.Message, udpBatch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, maxQuerySize)}
	}
	outBufs := make([][]byte, udpBatch)
	for i := range outBufs {
		// Most answers fit; PackBuffer allocates for the rare bigger one.
		outBufs[i] = make([]byte, 0, 4096)
	}
	out := make([]ipv4.Message, 0, udpBatch)
	for {
		n, err := conn.ReadBatch(in, 0)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		out = out[:0]
		for i := 0; i < n; i++ {
			start := time.Now()
			wire := in[i].Buffers[0][:in[i].N]
			addr := in[i].Addr
			if !h.Limit.Allow(addr) {
				h.Metrics.dropped(h.Server, "rate-limit")
				continue
			}
			// A zone's server whose responses no one observes answers
			// the plainest repeated queries from their packed responses.
			var snap *Snapshot
			qtype, plain := uint16(0), false
			if h.Zone != "" && h.Observe == nil {
				snap = h.snapshot.Load()
				qtype, plain = plainQuery(wire)
			}
			if plain && snap != nil {
				if b, a, ok := h.wire.get(snap, wire, outBufs[len(out)][:0]); ok {
					out = append(out, ipv4.Message{Buffers: [][]byte{b}, Addr: addr})
					h.Metrics.observeAnswer(h.Server, a.qtype, a.rcode, time.Since(start))
					continue
				}
			}
			req := new(dns.Msg)
			if err := req.Unpack(wire); err != nil {
				if resp := formErr(wire); resp != nil {
					if b, err := resp.PackBuffer(outBufs[len(out)]); err == nil {
						out = append(out, ipv4.Message{Buffers: [][]byte{b}, Addr: addr})
					}
				}
				continue
			}
			resp, ok, static := h.respondLocal(req, false)
			if !ok {
				h.forwardUDP(ctx, pc, req, addr, start)
				continue
			}
			if resp == nil {
				h.Metrics.dropped(h.Server, "response")
				continue
			}
			b, err := resp.PackBuffer(outBufs[len(out)])
			if err != nil {
				h.Metrics.writeError(h.Server)
				continue
			}
			if plain && static && snap != nil {
				h.wire.put(snap, wire, b, qtype, resp.Rcode)
			}
			out = append(out, ipv4.Message{Buffers: [][]byte{b}, Addr: addr})
			h.Metrics.observe(h.Server, req, resp, time.Since(start))
		}
		for sent := 0; sent < len(out); {
			k, err := conn.WriteBatch(out[sent:], 0)
			if err != nil {
				h.Metrics.writeError(h.Server)
				break
			}
			sent += k
		}
	}
}

// DefaultMaxPending bounds queries waiting for an upstream on the UDP path
// when MaxPending is 0.
const DefaultMaxPending = 2048

// forwardUDP answers a query that needs an upstream from a goroutine with
// its own buffer (the datagram buffer is reused by the next read), so a slow
// upstream never stalls the loop. Past MaxPending waiting queries the answer
// is SERVFAIL at once: a flood of uncached names costs bounded goroutines.
func (h *Handler) forwardUDP(ctx context.Context, pc *net.UDPConn, req *dns.Msg, addr net.Addr, start time.Time) {
	limit := int64(h.MaxPending)
	if limit <= 0 {
		limit = DefaultMaxPending
	}
	if h.pending.Add(1) > limit {
		h.pending.Add(-1)
		h.Metrics.dropped(h.Server, "busy")
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeServerFailure)
		if b, err := m.Pack(); err == nil {
			_, _ = pc.WriteTo(b, addr)
		}
		return
	}
	go func() {
		defer h.pending.Add(-1)
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp := h.Respond(fctx, req, false)
		if resp == nil {
			return
		}
		if b, err := resp.Pack(); err == nil {
			_, _ = pc.WriteTo(b, addr)
		}
		h.Metrics.observe(h.Server, req, resp, time.Since(start))
	}()
}

// formErr answers a datagram that does not parse but has a DNS header with
// FORMERR (RFC 1035 §4.1.1); shorter garbage is dropped.
func formErr(wire []byte) *dns.Msg {
	if len(wire) < 12 || wire[2]&0x80 != 0 { // too short, or a response
		return nil
	}
	m := new(dns.Msg)
	m.Id = uint16(wire[0])<<8 | uint16(wire[1])
	m.Response = true
	m.Opcode = int(wire[2]>>3) & 0xF
	m.Rcode = dns.RcodeFormatError
	return m
}
