package dns

import (
	"bytes"
	"context"
	"net"
	"testing"

	"github.com/miekg/dns"
)

// FuzzRespond feeds arbitrary bytes to the message handler. A query
// plainQuery takes unpacks as a standard query, and its static answer is
// the same for another ID (what the UDP loop's stored answers rely on).
// What must hold
// for every message that unpacks: a response (QR=1) gets no reply at all; any
// other gets a reply that packs, whose UDP size stays within what the client
// may receive (512 bytes without EDNS, its EDNS buffer capped at 1232 with
// it). Forwarding goes nowhere (no upstream), so only our own code runs.
func FuzzRespond(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"kubernetes.default.svc.cluster.local.", dns.TypeA}, {"_http._tcp.front.web.svc.cluster.local.", dns.TypeSRV},
		{"1.0.96.10.in-addr.arpa.", dns.TypePTR}, {"ext.web.svc.cluster.local.", dns.TypeANY}, {"cluster.local.", dns.TypeNS},
		{"db.web.svc.cluster.local.", dns.TypeA}} {
		for _, size := range []uint16{0, 600, 4096} {
			m := new(dns.Msg)
			m.SetQuestion(q.name, q.qtype)
			if size > 0 {
				m.SetEdns0(size, true)
			}
			b, _ := m.Pack()
			f.Add(b)
			m.Response = true
			b, _ = m.Pack()
			f.Add(b)
		}
	}
	h := testHandlerNoUpstream()
	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(dns.Msg)
		err := req.Unpack(b)
		_, plain := plainQuery(b)
		if plain && (err != nil || req.Response || req.Opcode != dns.OpcodeQuery || len(req.Question) != 1) {
			t.Fatalf("plainQuery took what is no plain query: %v %v", req, err)
		}
		if err != nil {
			return
		}
		if plain {
			storedAnswerHolds(t, h, req)
		}
		for _, tcp := range []bool{false, true} {
			resp := h.Respond(context.Background(), req, tcp)
			if req.Response {
				if resp != nil {
					t.Fatalf("a response (QR=1) was answered: %v", resp)
				}
				continue
			}
			out, err := resp.Pack()
			if err != nil {
				t.Fatalf("reply does not pack: %v", err)
			}
			limit := dns.MinMsgSize
			if opt := req.IsEdns0(); opt != nil {
				limit = min(max(int(opt.UDPSize()), dns.MinMsgSize), DefaultMaxUDPSize)
			}
			if !tcp && len(out) > limit {
				t.Fatalf("UDP reply of %d bytes, the client may receive %d", len(out), limit)
			}
		}
	})
}

func testHandlerNoUpstream() *Handler {
	h := &Handler{Zone: "cluster.local", Cache: NewCache(1<<20, 0)}
	svcs, slices, pods := testObjects()
	h.SetSnapshot(NewSnapshot(Config{Zone: "cluster.local", TTL: 30, NameserverIP: net.ParseIP("10.96.0.10")}, svcs, slices, newPodList(pods)))
	return h
}

// storedAnswerHolds: a plain query's static response, packed, differs
// from the response to the same query under another ID only in the ID.
func storedAnswerHolds(t *testing.T, h *Handler, req *dns.Msg) {
	m, ok, static := h.respondLocal(req.Copy(), false)
	if !ok || !static {
		return
	}
	other := req.Copy()
	other.Id++
	m2, _, _ := h.respondLocal(other, false)
	a, err1 := m.Pack()
	b, err2 := m2.Pack()
	if err1 != nil || err2 != nil || !bytes.Equal(a[2:], b[2:]) {
		t.Fatalf("a static answer changed with the ID: %v %v", err1, err2)
	}
}
