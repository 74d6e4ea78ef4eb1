package dns

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxLimitedClients bounds the per-client table; when it is full the table
// starts afresh, so a flood of source addresses cannot grow memory.
const maxLimitedClients = 65536

// ClientLimiter gives each client address its own token bucket. A nil
// *ClientLimiter allows everything (the default: rate limiting is opt-in,
// as in CoreDNS).
type ClientLimiter struct {
	limit rate.Limit
	burst int
	now   func() time.Time

	mu      sync.Mutex
	clients map[netip.Addr]*rate.Limiter
}

// NewClientLimiter allows qps queries per second per client address, with
// bursts of up to burst queries (at least 1). qps <= 0 returns nil: no limit.
func NewClientLimiter(qps float64, burst int) *ClientLimiter {
	if qps <= 0 {
		return nil
	}
	return &ClientLimiter{limit: rate.Limit(qps), burst: max(burst, 1), now: time.Now,
		clients: map[netip.Addr]*rate.Limiter{}}
}

// Allow reports whether a query from addr may be answered now.
func (l *ClientLimiter) Allow(addr net.Addr) bool {
	if l == nil {
		return true
	}
	ip := addrIP(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.clients[ip]
	if !ok {
		if len(l.clients) >= maxLimitedClients {
			clear(l.clients)
		}
		b = rate.NewLimiter(l.limit, l.burst)
		l.clients[ip] = b
	}
	return b.AllowN(l.now(), 1)
}

func addrIP(addr net.Addr) netip.Addr {
	switch a := addr.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}
