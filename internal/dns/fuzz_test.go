package dns

import (
	"context"
	"net"
	"testing"

	"github.com/miekg/dns"
)

// FuzzRespond feeds arbitrary bytes to the message handler: whatever
// unpacks must get a reply that packs, for UDP and TCP, without a panic.
// Forwarding goes nowhere (no upstream), so only our own code runs.
func FuzzRespond(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"kubernetes.default.svc.cluster.local.", dns.TypeA}, {"_http._tcp.front.web.svc.cluster.local.", dns.TypeSRV},
		{"1.0.96.10.in-addr.arpa.", dns.TypePTR}, {"ext.web.svc.cluster.local.", dns.TypeANY}, {"cluster.local.", dns.TypeNS}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(4096, true)
		b, _ := m.Pack()
		f.Add(b)
	}
	h := testHandlerNoUpstream()
	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(dns.Msg)
		if err := req.Unpack(b); err != nil {
			return
		}
		for _, tcp := range []bool{false, true} {
			resp := h.Respond(context.Background(), req, tcp)
			out, err := resp.Pack()
			if err != nil {
				t.Fatalf("reply does not pack: %v", err)
			}
			if !tcp && len(out) > 65535 {
				t.Fatalf("reply of %d bytes", len(out))
			}
		}
	})
}

func testHandlerNoUpstream() *Handler {
	h := &Handler{Zone: "cluster.local", Cache: NewCache(100, 0)}
	svcs, slices, pods := testObjects()
	h.SetSnapshot(NewSnapshot(Config{Zone: "cluster.local", TTL: 30, NameserverIP: net.ParseIP("10.96.0.10")}, svcs, slices, pods))
	return h
}
