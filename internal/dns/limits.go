package dns

// Limits are the abuse bounds of a DNS server, settable per server.
type Limits struct {
	MaxUDPSize  int     // largest UDP reply, whatever the client's EDNS buffer (0: 1232)
	MaxTCPConns int     // open TCP connections (0: 256)
	MaxInflight int     // distinct questions upstream at once (0: 1000)
	RateLimit   float64 // queries per second per client address (0: off)
	RateBurst   int     // burst above RateLimit (0: one second's worth)
}

// Apply sets the limits on h and its forwarder.
func (l Limits) Apply(h *Handler) {
	h.MaxUDPSize, h.MaxTCPConns = l.MaxUDPSize, l.MaxTCPConns
	burst := l.RateBurst
	if burst <= 0 {
		burst = int(l.RateLimit) + 1
	}
	h.Limit = NewClientLimiter(l.RateLimit, burst)
	if h.Forward != nil {
		h.Forward.MaxInflight = l.MaxInflight
	}
}
