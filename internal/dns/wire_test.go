package dns

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// plainQuery takes standard one-question IN queries, with or without a
// bare OPT record, and nothing else.
func TestPlainQuery(t *testing.T) {
	pack := func(edit func(m *dns.Msg)) []byte {
		m := new(dns.Msg)
		m.SetQuestion("front.web.svc.cluster.local.", dns.TypeA)
		edit(m)
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	withOption := func(m *dns.Msg) {
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0123456789abcdef"})
	}
	for _, c := range []struct {
		name string
		wire []byte
		ok   bool
	}{
		{"plain", pack(func(*dns.Msg) {}), true},
		{"EDNS", pack(func(m *dns.Msg) { m.SetEdns0(4096, false) }), true},
		{"EDNS with DO, CD, no RD", pack(func(m *dns.Msg) { m.SetEdns0(1232, true); m.CheckingDisabled = true; m.RecursionDesired = false }), true},
		{"a response", pack(func(m *dns.Msg) { m.Response = true }), false},
		{"another opcode", pack(func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }), false},
		{"class CH", pack(func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }), false},
		{"two questions", pack(func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }), false},
		{"an EDNS option", pack(withOption), false},
		{"EDNS version 1", pack(func(m *dns.Msg) { m.SetEdns0(1232, false); m.IsEdns0().SetVersion(1) }), false},
		{"an answer record", pack(func(m *dns.Msg) {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "x.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(1, 2, 3, 4)}}
		}), false},
		{"trailing bytes", append(pack(func(*dns.Msg) {}), 0), false},
		{"cut short", pack(func(*dns.Msg) {})[:20], false},
		{"a compression pointer", []byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1}, false},
	} {
		if _, ok := plainQuery(c.wire); ok != c.ok {
			t.Errorf("%s: plain %v, want %v", c.name, ok, c.ok)
		}
	}
}

// The UDP loop's stored responses are byte for byte what resolving gives
// (but the ID), only names whose answer is the snapshot's alone are
// stored (not pod names, found or not, or an ExternalName's chase), and a
// new snapshot is answered at once.
func TestStoredAnswersMatchResolving(t *testing.T) {
	h, _ := testHandler(t)
	probe, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.LocalAddr().String()
	probe.Close()
	stop, err := Listen(addr, h, make(chan error, 4))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask := func(m *dns.Msg) []byte {
		t.Helper()
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("%s: %v", m.Question[0].Name, err)
		}
		return buf[:n]
	}
	type q struct {
		name   string
		qtype  uint16
		edns   bool
		stored bool
	}
	for _, c := range []q{
		{"front.web.svc.cluster.local.", dns.TypeA, false, true},
		{"FrOnT.web.svc.cluster.local.", dns.TypeA, true, true},
		{"front.web.svc.cluster.local.", dns.TypeAAAA, true, true},
		{"_http._tcp.front.web.svc.cluster.local.", dns.TypeSRV, false, true},
		{"db.web.svc.cluster.local.", dns.TypeA, true, true},
		{"cluster.local.", dns.TypeSOA, false, true},
		{"missing.web.svc.cluster.local.", dns.TypeA, false, true},
		{"www.example.org.web.svc.cluster.local.", dns.TypeAAAA, true, true},
		{"10-244-1-20.web.pod.cluster.local.", dns.TypeA, false, false},
		{"10-244-1-99.web.pod.cluster.local.", dns.TypeA, false, false},
		{"ext.web.svc.cluster.local.", dns.TypeA, false, false},
	} {
		m := new(dns.Msg)
		m.SetQuestion(c.name, c.qtype)
		if c.edns {
			m.SetEdns0(1232, true)
		}
		want, err := h.Respond(context.Background(), m.Copy(), false).Pack()
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []uint16{7, 8} {
			m.Id = id
			got := ask(m)
			if got[0] != byte(id>>8) || got[1] != byte(id) || !bytes.Equal(got[2:], want[2:]) {
				t.Errorf("%s %s (id %d): response differs from resolving it", c.name, dns.TypeToString[c.qtype], id)
			}
		}
		b, _ := m.Pack()
		if _, a, stored := h.wire.get(h.snapshot.Load(), b, nil); stored != c.stored || (stored && a.qtype != c.qtype) {
			t.Errorf("%s %s: stored %v, want %v", c.name, dns.TypeToString[c.qtype], stored, c.stored)
		}
	}

	svcs, slices, pods := testObjects()
	svcs[1].Spec.ClusterIP, svcs[1].Spec.ClusterIPs = "10.96.5.6", []string{"10.96.5.6"}
	svcs = append(svcs, service("web", "missing", "10.96.5.7"))
	h.SetSnapshot(NewSnapshot(Config{Zone: "cluster.local", TTL: 30, NameserverIP: net.ParseIP("10.96.0.10")}, svcs, slices, newPodList(pods)))
	m := new(dns.Msg)
	m.SetQuestion("front.web.svc.cluster.local.", dns.TypeA)
	resp := new(dns.Msg)
	if err := resp.Unpack(ask(m)); err != nil || len(resp.Answer) != 1 || resp.Answer[0].(*dns.A).A.String() != "10.96.5.6" {
		t.Fatalf("after the Service's address changed: %v %v", resp, err)
	}
	m.SetQuestion("missing.web.svc.cluster.local.", dns.TypeA)
	if err := resp.Unpack(ask(m)); err != nil || resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 {
		t.Fatalf("a name answered NXDOMAIN before its Service was made: %v %v", resp, err)
	}
}

// BenchmarkStoredAnswer is the UDP loop's cost for a repeated cluster
// name (compare BenchmarkServeDNSWire).
func BenchmarkStoredAnswer(b *testing.B) {
	h := testHandlerNoUpstream()
	req := new(dns.Msg)
	req.SetQuestion("front.web.svc.cluster.local.", dns.TypeA)
	wire, _ := req.Pack()
	snap := h.snapshot.Load()
	resp, _ := h.Respond(context.Background(), req, false).Pack()
	h.wire.put(snap, wire, resp, dns.TypeA, dns.RcodeSuccess)
	out := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := plainQuery(wire); !ok {
			b.Fatal("not plain")
		}
		if _, _, ok := h.wire.get(snap, wire, out[:0]); !ok {
			b.Fatal("not stored")
		}
	}
}
