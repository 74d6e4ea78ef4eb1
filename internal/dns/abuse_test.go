package dns

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// listenTest serves h on a free loopback port and returns its address.
func listenTest(t *testing.T, h *Handler) string {
	t.Helper()
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
	t.Cleanup(stop)
	return addr
}

// readReply waits up to d for one datagram on c.
func readReply(c net.Conn, d time.Duration) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	return buf[:n], err
}

// A message that is itself a response (QR=1) is never answered, over UDP,
// whether it parses or not: two servers would answer each other forever.
func TestNoReplyToResponses(t *testing.T) {
	h, _ := testHandler(t)
	addr := listenTest(t, h)
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp := new(dns.Msg)
	resp.SetQuestion("kubernetes.default.svc.cluster.local.", dns.TypeA)
	resp.Response = true
	wellFormed, _ := resp.Pack()
	garbage := append(append([]byte{}, wellFormed[:12]...), 0xff, 0xff, 0xff)
	for name, wire := range map[string][]byte{"well-formed": wellFormed, "garbage": garbage} {
		if _, err := c.Write(wire); err != nil {
			t.Fatal(err)
		}
		if b, err := readReply(c, 300*time.Millisecond); err == nil {
			t.Fatalf("%s response answered with %d bytes", name, len(b))
		}
	}
	if m := h.Respond(context.Background(), resp, true); m != nil {
		t.Fatalf("Respond answered a response: %v", m)
	}
	// The server is alive: a query still gets its answer.
	q := new(dns.Msg)
	q.SetQuestion("kubernetes.default.svc.cluster.local.", dns.TypeA)
	wire, _ := q.Pack()
	if _, err := c.Write(wire); err != nil {
		t.Fatal(err)
	}
	if _, err := readReply(c, 2*time.Second); err != nil {
		t.Fatalf("query after responses: %v", err)
	}
}

// slowUpstream answers after delay.
func slowUpstream(delay time.Duration) func(dns.Question, *dns.Msg) {
	return func(q dns.Question, m *dns.Msg) {
		time.Sleep(delay)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("203.0.113.10").To4()})
	}
}

// Identical questions in flight reach the upstream once.
func TestForwardCoalescesIdenticalQuestions(t *testing.T) {
	up := startUpstream(t, slowUpstream(200*time.Millisecond))
	h := &Handler{Forward: &Forwarder{Upstreams: []string{up.addr}}}
	var wg sync.WaitGroup
	var ok atomic.Int32
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if m := query(t, h, "www.example.org.", dns.TypeA); m.Rcode == dns.RcodeSuccess && len(m.Answer) == 1 {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 50 || up.queries.Load() != 1 {
		t.Fatalf("%d of 50 answered, upstream asked %d times (want 1)", ok.Load(), up.queries.Load())
	}
}

// At most MaxInflight distinct questions are upstream; the rest fail at once.
func TestForwardBoundsInflight(t *testing.T) {
	up := startUpstream(t, slowUpstream(300*time.Millisecond))
	h := &Handler{Forward: &Forwarder{Upstreams: []string{up.addr}, MaxInflight: 3}}
	var wg sync.WaitGroup
	var servfail atomic.Int32
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if m := query(t, h, fmt.Sprintf("r%d.example.org.", i), dns.TypeA); m.Rcode == dns.RcodeServerFailure {
				servfail.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := up.queries.Load(); n > 3 || n == 0 || servfail.Load() != 20-n {
		t.Fatalf("upstream saw %d distinct queries (max 3), %d SERVFAIL", n, servfail.Load())
	}
}

// The node-local cache's TCP forwarding reuses its connections: many
// misses, one connection; a connection the upstream closed is replaced.
func TestForwardTCPReusesConnections(t *testing.T) {
	up := startUpstream(t, outsideAnswers)
	h := &Handler{Forward: &Forwarder{Upstreams: []string{up.addr}, TCPOnly: true}}
	for i := 0; i < 100; i++ {
		if m := query(t, h, fmt.Sprintf("n%d.example.org.", i), dns.TypeA); m.Rcode != dns.RcodeNameError {
			t.Fatalf("miss %d: %s", i, dns.RcodeToString[m.Rcode])
		}
	}
	if n := up.conns.Load(); n != 1 {
		t.Fatalf("100 sequential misses opened %d TCP connections, want 1", n)
	}
	// Close the pooled connection under the forwarder, as an upstream's
	// idle timeout would: the next query still succeeds.
	p := h.Forward.pool(up.addr)
	p.mu.Lock()
	_ = p.idle[len(p.idle)-1].Conn.Conn.Close()
	p.mu.Unlock()
	if m := query(t, h, "www.example.org.", dns.TypeA); m.Rcode != dns.RcodeSuccess {
		t.Fatalf("after the upstream closed the connection: %s", dns.RcodeToString[m.Rcode])
	}
}

// A burst of concurrent misses over TCP opens at most MaxConns
// connections and keeps them: a second burst opens none (a pool that
// closed what did not fit idle would open one per query past it).
func TestForwardTCPBurstsKeepTheirConnections(t *testing.T) {
	up := startUpstream(t, slowUpstream(20*time.Millisecond))
	h := &Handler{Forward: &Forwarder{Upstreams: []string{up.addr}, TCPOnly: true, MaxConns: 4}}
	burst := func(round int) {
		var wg sync.WaitGroup
		for i := 0; i < 40; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if m := query(t, h, fmt.Sprintf("b%d-%d.example.org.", round, i), dns.TypeA); m.Rcode != dns.RcodeSuccess {
					t.Errorf("burst %d, miss %d: %s", round, i, dns.RcodeToString[m.Rcode])
				}
			}()
		}
		wg.Wait()
	}
	burst(1)
	if n := up.conns.Load(); n > 4 || n == 0 {
		t.Fatalf("40 concurrent misses opened %d TCP connections, want 1 to 4", n)
	}
	first := up.conns.Load()
	burst(2)
	if n := up.conns.Load(); n != first {
		t.Fatalf("a second burst opened %d more connections, want none", n-first)
	}
}

// After a burst, steady sequential misses keep using one connection and
// the others the burst opened age out and close (a pool that took its
// idle connections in turn would keep all of them open).
func TestForwardTCPBurstConnectionsAgeOut(t *testing.T) {
	defer func(d time.Duration) { maxIdleAge = d }(maxIdleAge)
	maxIdleAge = 200 * time.Millisecond
	up := startUpstream(t, slowUpstream(20*time.Millisecond))
	h := &Handler{Forward: &Forwarder{Upstreams: []string{up.addr}, TCPOnly: true, MaxConns: 4}}
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			query(t, h, fmt.Sprintf("b%d.example.org.", i), dns.TypeA)
		}()
	}
	wg.Wait()
	p := h.Forward.pool(up.addr)
	open := func() int { p.mu.Lock(); defer p.mu.Unlock(); return p.open }
	if n := open(); n < 2 {
		t.Fatalf("the burst left %d connections open; the test needs more than one", n)
	}
	for i, start := 0, time.Now(); time.Since(start) < 3*maxIdleAge; i++ {
		if m := query(t, h, fmt.Sprintf("s%d.example.org.", i), dns.TypeA); m.Rcode != dns.RcodeSuccess {
			t.Fatalf("miss %d: %s", i, dns.RcodeToString[m.Rcode])
		}
	}
	if n := open(); n != 1 {
		t.Fatalf("steady sequential misses kept %d connections open, want 1", n)
	}
}

// The cache stays within its byte budget whatever the answers' sizes.
func TestCacheBoundedInBytes(t *testing.T) {
	c := NewCache(64<<10, 0)
	for i := 0; i < 2000; i++ {
		q := dns.Question{Name: fmt.Sprintf("n%d.example.org.", i), Qtype: dns.TypeTXT, Qclass: dns.ClassINET}
		m := new(dns.Msg)
		m.SetQuestion(q.Name, q.Qtype)
		m.Response = true
		for j := 0; j < 1+i%5; j++ {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{strings.Repeat("x", 200)}})
		}
		c.Put(q, false, m)
		if b := c.Bytes(); b > c.MaxBytes {
			t.Fatalf("after %d answers the cache holds %d bytes, budget %d", i+1, b, c.MaxBytes)
		}
	}
	if c.Len() == 0 || c.Bytes() < c.MaxBytes/4 {
		t.Fatalf("cache nearly empty: %d entries, %d bytes", c.Len(), c.Bytes())
	}
	// Replacing an entry does not count it twice.
	c = NewCache(64<<10, 0)
	q := dns.Question{Name: "www.example.org.", Qtype: dns.TypeA, Qclass: dns.ClassINET}
	m := new(dns.Msg)
	m.SetQuestion(q.Name, q.Qtype)
	outsideAnswers(q, m)
	c.Put(q, false, m)
	once := c.Bytes()
	c.Put(q, false, m)
	if c.Bytes() != once || c.Len() != 1 {
		t.Fatalf("one entry put twice: %d bytes (once: %d), %d entries", c.Bytes(), once, c.Len())
	}
}

// Past MaxTCPConns, a further connection is not served until one closes.
func TestTCPConnectionsCapped(t *testing.T) {
	h, _ := testHandler(t)
	h.MaxTCPConns = 2
	addr := listenTest(t, h)
	q := new(dns.Msg)
	q.SetQuestion("kubernetes.default.svc.cluster.local.", dns.TypeA)
	var held []*dns.Conn
	for i := 0; i < 2; i++ {
		c, err := dns.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.WriteMsg(q); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ReadMsg(); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		held = append(held, c)
	}
	third, err := dns.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	_ = third.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if err := third.WriteMsg(q); err == nil {
		if _, err := third.ReadMsg(); err == nil {
			t.Fatal("a third connection was served with the cap at 2")
		}
	}
	// The waiting connection is served once a slot frees.
	held[0].Close()
	_ = third.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := third.ReadMsg(); err != nil {
		t.Fatalf("the waiting connection after one closed: %v", err)
	}
}

// With a rate limit on, a client above its rate is dropped while another
// client keeps being answered.
func TestClientRateLimit(t *testing.T) {
	l := NewClientLimiter(10, 5)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	a := &net.UDPAddr{IP: net.ParseIP("10.244.1.5"), Port: 4000}
	b := &net.UDPAddr{IP: net.ParseIP("10.244.1.6"), Port: 4000}
	allowed := 0
	for i := 0; i < 100; i++ {
		if l.Allow(a) {
			allowed++
		}
	}
	if allowed != 5 {
		t.Fatalf("burst of 100 from one client: %d allowed, want the burst of 5", allowed)
	}
	if !l.Allow(b) {
		t.Fatal("another client was limited")
	}
	now = now.Add(time.Second)
	allowed = 0
	for i := 0; i < 100; i++ {
		if l.Allow(a) {
			allowed++
		}
	}
	if allowed != 5 {
		t.Fatalf("a second later: %d allowed, want 5 (the bucket holds 5)", allowed)
	}
	if NewClientLimiter(0, 0).Allow(a) != true {
		t.Fatal("a nil limiter must allow")
	}
}
