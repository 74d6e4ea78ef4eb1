package dns

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Observe sees the response on every path the UDP listener answers by:
// forwarded (first query), from the cache (second), over TCP; and before
// the client has it.
func TestObserveSeesEveryAnswerBeforeItLeaves(t *testing.T) {
	h, _ := testHandler(t)
	var mu sync.Mutex
	seen := 0
	h.Observe = func(_ context.Context, m *dns.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if len(m.Answer) == 1 {
			seen++
		}
	}
	addr := listenTest(t, h)
	for i, network := range []string{"udp", "udp", "tcp"} {
		c := &dns.Client{Net: network, Timeout: 2 * time.Second}
		req := new(dns.Msg)
		req.SetQuestion("www.example.org.", dns.TypeA)
		resp, _, err := c.Exchange(req, addr)
		if err != nil || len(resp.Answer) != 1 {
			t.Fatalf("query %d over %s: %v %v", i, network, resp, err)
		}
		mu.Lock()
		got := seen
		mu.Unlock()
		if got != i+1 {
			t.Fatalf("after query %d over %s Observe saw %d answers, want %d", i, network, got, i+1)
		}
	}
}
