package dns

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The batched UDP server and the TCP server on loopback: cluster names
// answered in the batch loop, forwarded names from a goroutine, garbage with
// a header gets FORMERR, a truncated UDP answer is complete over TCP.
func TestListenUDPAndTCP(t *testing.T) {
	h, _ := testHandler(t)
	probe, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.LocalAddr().String()
	probe.Close()
	errc := make(chan error, 4)
	stop, err := Listen(addr, h, errc)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	udp := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	for _, name := range []string{"kubernetes.default.svc.cluster.local.", "www.example.org."} {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		resp, _, err := udp.Exchange(m, addr)
		if err != nil || resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 || resp.Id != m.Id {
			t.Fatalf("%s over UDP: %v %v", name, resp, err)
		}
	}
	// Many queries at once exercise batches.
	for i := 0; i < 200; i++ {
		m := new(dns.Msg)
		m.SetQuestion("front.web.svc.cluster.local.", dns.TypeA)
		if resp, _, err := udp.Exchange(m, addr); err != nil || len(resp.Answer) != 1 {
			t.Fatalf("query %d: %v", i, err)
		}
	}
	// A header followed by garbage.
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no reply to a malformed query: %v", err)
	}
	resp := new(dns.Msg)
	if err := resp.Unpack(buf[:n]); err != nil || resp.Id != 0x1234 || resp.Rcode != dns.RcodeFormatError {
		t.Fatalf("malformed query: %v %v", resp, err)
	}
	// Big answer: truncated over UDP, whole over TCP.
	m := new(dns.Msg)
	m.SetQuestion("big.example.org.", dns.TypeTXT)
	if r, _, err := udp.Exchange(m, addr); err != nil || !r.Truncated {
		t.Fatalf("UDP big answer: tc=%v %v", r != nil && r.Truncated, err)
	}
	tcp := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	if r, _, err := tcp.Exchange(m, addr); err != nil || r.Truncated || len(r.Answer) != 40 {
		t.Fatalf("TCP big answer: %v", err)
	}
	select {
	case err := <-errc:
		t.Fatalf("server error: %v", err)
	default:
	}
}
