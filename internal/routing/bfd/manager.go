package bfd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Port is where single-hop BFD Control packets are received (RFC 5881).
const Port = 3784

// Peer is one session's configuration.
type Peer struct {
	Address netip.Addr
	// Port is the peer's BFD port: Port unless a test says otherwise.
	Port       uint16
	Interval   time.Duration // ours to send at and to receive at
	Multiplier uint8
}

// Manager runs a session per peer over one receiving socket per address
// family. onChange hears every change into and out of Up.
type Manager struct {
	log      *slog.Logger
	listen   netip.AddrPort
	source   netip.Addr
	onChange func(peer netip.Addr, up bool)

	mu       sync.Mutex
	sessions map[netip.Addr]*runner
	conns    []net.PacketConn
}

// NewManager receives on listen (an unspecified address: both families)
// and sends from source (invalid: the kernel picks).
func NewManager(log *slog.Logger, listen netip.AddrPort, source netip.Addr, onChange func(netip.Addr, bool)) *Manager {
	return &Manager{log: log, listen: listen, source: source, onChange: onChange, sessions: map[netip.Addr]*runner{}}
}

// Start opens the receiving sockets; they and every session end with ctx.
func (m *Manager) Start(ctx context.Context) error {
	var errs []error
	for _, fam := range []string{"udp4", "udp6"} {
		addr := m.listen.Addr()
		if addr.IsValid() && !addr.IsUnspecified() && (addr.Is4() != (fam == "udp4")) {
			continue
		}
		if !addr.IsValid() || addr.IsUnspecified() {
			addr = netip.IPv4Unspecified()
			if fam == "udp6" {
				addr = netip.IPv6Unspecified()
			}
		}
		c, err := net.ListenPacket(fam, netip.AddrPortFrom(addr, m.listen.Port()).String())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.mu.Lock()
		m.conns = append(m.conns, c)
		m.mu.Unlock()
		go m.receive(c, fam == "udp6")
	}
	if len(m.conns) == 0 {
		return fmt.Errorf("bfd: no socket to receive on: %w", errors.Join(errs...))
	}
	go func() { <-ctx.Done(); m.Close() }()
	return nil
}

// Close ends every session (telling each peer AdminDown) and closes the
// receiving sockets before it returns.
func (m *Manager) Close() {
	m.Set(nil)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.conns {
		c.Close()
	}
	m.conns = nil
}

// receive reads Control packets and hands each to its peer's session.
// Only packets sent with TTL 255 are taken: they cannot have been routed
// here from off the link (RFC 5881 section 5).
func (m *Manager) receive(c net.PacketConn, v6 bool) {
	read := readerFor(c, v6)
	buf := make([]byte, 512)
	for {
		n, ttl, src, err := read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if ttl != 255 {
			continue
		}
		p, err := Parse(buf[:n])
		if err != nil {
			m.log.Debug("BFD packet discarded", "from", src, "err", err)
			continue
		}
		m.mu.Lock()
		r := m.sessions[src]
		m.mu.Unlock()
		if r != nil {
			select {
			case r.rx <- p:
			default: // the session is behind; a later packet says the same
			}
		}
	}
}

type readFunc func([]byte) (n, ttl int, src netip.Addr, err error)

func readerFor(c net.PacketConn, v6 bool) readFunc {
	addrOf := func(a net.Addr) netip.Addr {
		if u, ok := a.(*net.UDPAddr); ok {
			ip, _ := netip.AddrFromSlice(u.IP)
			return ip.Unmap()
		}
		return netip.Addr{}
	}
	if v6 {
		pc := ipv6.NewPacketConn(c)
		_ = pc.SetControlMessage(ipv6.FlagHopLimit, true)
		return func(b []byte) (int, int, netip.Addr, error) {
			n, cm, src, err := pc.ReadFrom(b)
			if err != nil || cm == nil {
				return 0, 0, netip.Addr{}, err
			}
			return n, cm.HopLimit, addrOf(src), nil
		}
	}
	pc := ipv4.NewPacketConn(c)
	_ = pc.SetControlMessage(ipv4.FlagTTL, true)
	return func(b []byte) (int, int, netip.Addr, error) {
		n, cm, src, err := pc.ReadFrom(b)
		if err != nil || cm == nil {
			return 0, 0, netip.Addr{}, err
		}
		return n, cm.TTL, addrOf(src), nil
	}
}

// Set makes the sessions match peers: new ones start Down, changed ones
// start over, removed ones tell their peer AdminDown and end.
func (m *Manager) Set(peers []Peer) {
	want := map[netip.Addr]Peer{}
	for _, p := range peers {
		want[p.Address] = p.withDefaults()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for a, r := range m.sessions {
		if p, ok := want[a]; !ok || p != r.peer {
			r.close()
			delete(m.sessions, a)
		}
	}
	for a, p := range want {
		if _, ok := m.sessions[a]; ok {
			continue
		}
		r, err := m.newRunner(p)
		if err != nil {
			m.log.Warn("BFD session not started", "peer", a, "err", err)
			continue
		}
		m.sessions[a] = r
	}
}

// States returns each session's state.
func (m *Manager) States() map[netip.Addr]State {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[netip.Addr]State, len(m.sessions))
	for a, r := range m.sessions {
		out[a] = r.State()
	}
	return out
}

func (m *Manager) usedDisc(d uint32) bool {
	for _, r := range m.sessions {
		if r.disc == d {
			return true
		}
	}
	return false
}

func (p Peer) withDefaults() Peer {
	if p.Port == 0 {
		p.Port = Port
	}
	if p.Interval <= 0 {
		p.Interval = 100 * time.Millisecond
	}
	if p.Multiplier == 0 {
		p.Multiplier = 3
	}
	return p
}

func (m *Manager) newRunner(p Peer) (*runner, error) {
	conn, err := sendSocket(p.Address, m.source)
	if err != nil {
		return nil, err
	}
	disc := rand.Uint32()
	for disc == 0 || m.usedDisc(disc) {
		disc = rand.Uint32()
	}
	r := &runner{peer: p, disc: disc, conn: conn, log: m.log, onChange: m.onChange,
		rx: make(chan Packet, 8), stop: make(chan struct{}), done: make(chan struct{})}
	go r.run(NewSession(disc, p.Interval, p.Interval, p.Multiplier))
	return r, nil
}

// sendSocket opens the session's socket: a source port of 49152-65535
// kept for the session, TTL 255 (RFC 5881 section 4).
func sendSocket(peer, source netip.Addr) (*net.UDPConn, error) {
	fam := "udp4"
	if peer.Is6() && !peer.Is4In6() {
		fam = "udp6"
	}
	var src net.IP
	if source.IsValid() && source.Is4() == (fam == "udp4") {
		src = source.AsSlice()
	}
	var err error
	for range 16 {
		var c *net.UDPConn
		c, err = net.ListenUDP(fam, &net.UDPAddr{IP: src, Port: 49152 + rand.IntN(65536-49152)})
		if err != nil {
			continue
		}
		if fam == "udp4" {
			err = ipv4.NewConn(c).SetTTL(255)
		} else {
			err = ipv6.NewConn(c).SetHopLimit(255)
		}
		if err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	return nil, err
}
