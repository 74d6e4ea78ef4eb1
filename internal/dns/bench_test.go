package dns

import (
	"context"
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkRespond is the in-process cost of answering a cluster name
// (unpack and pack excluded); the end-to-end comparison with CoreDNS is
// bench/dns.
func BenchmarkRespond(b *testing.B) {
	h := testHandlerNoUpstream()
	req := new(dns.Msg)
	req.SetQuestion("front.web.svc.cluster.local.", dns.TypeA)
	b.ReportAllocs()
	for b.Loop() {
		h.Respond(context.Background(), req, false)
	}
}

// BenchmarkServeDNSWire includes unpacking the query and packing the reply.
func BenchmarkServeDNSWire(b *testing.B) {
	h := testHandlerNoUpstream()
	req := new(dns.Msg)
	req.SetQuestion("front.web.svc.cluster.local.", dns.TypeA)
	wire, _ := req.Pack()
	b.ReportAllocs()
	for b.Loop() {
		m := new(dns.Msg)
		if err := m.Unpack(wire); err != nil {
			b.Fatal(err)
		}
		resp := h.Respond(context.Background(), m, false)
		if _, err := resp.Pack(); err != nil {
			b.Fatal(err)
		}
	}
}
