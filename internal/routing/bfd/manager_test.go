package bfd

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

// responder is a peer on 127.0.0.2 built from a bare Session, so that a
// test can silence it (a dead path) or make it send with a low TTL.
type responder struct {
	t    *testing.T
	conn *net.UDPConn
	to   netip.AddrPort
	mu   sync.Mutex
	s    *Session
	ttl  int
	mute bool
}

func newResponder(t *testing.T, to netip.AddrPort, ttl int) *responder {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("no 127.0.0.2 here: %v", err)
	}
	if err := ipv4.NewConn(c).SetTTL(ttl); err != nil {
		t.Fatal(err)
	}
	r := &responder{t: t, conn: c, to: to, s: NewSession(77, 50*time.Millisecond, 50*time.Millisecond, 3), ttl: ttl}
	t.Cleanup(func() { c.Close() })
	go r.read()
	go r.send()
	return r
}

func (r *responder) port() uint16 { return uint16(r.conn.LocalAddr().(*net.UDPAddr).Port) }

func (r *responder) read() {
	buf := make([]byte, 64)
	for {
		n, err := r.conn.Read(buf)
		if err != nil {
			return
		}
		if p, err := Parse(buf[:n]); err == nil {
			r.mu.Lock()
			r.s.Receive(p, time.Now())
			r.mu.Unlock()
		}
	}
}

func (r *responder) send() {
	for {
		r.mu.Lock()
		mute, b := r.mute, r.s.Packet(false).Marshal()
		r.mu.Unlock()
		if !mute {
			if _, err := r.conn.WriteToUDPAddrPort(b, r.to); err != nil {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *responder) set(f func(*responder)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

type changes struct {
	mu  sync.Mutex
	got []bool
}

func (c *changes) add(_ netip.Addr, up bool) { c.mu.Lock(); c.got = append(c.got, up); c.mu.Unlock() }
func (c *changes) list() []bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]bool(nil), c.got...)
}

func startManager(t *testing.T, ch *changes) (*Manager, netip.AddrPort) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0") // a free port to listen on
	if err != nil {
		t.Fatal(err)
	}
	listen := netip.MustParseAddrPort(pc.LocalAddr().String())
	pc.Close()
	m := NewManager(slog.New(slog.NewTextHandler(io.Discard, nil)), listen, netip.MustParseAddr("127.0.0.1"), ch.add)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return m, listen
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("not within 10 s: %s", what)
		}
	}
}

// pair starts a manager and a responder on loopback (the responder
// sending with ttl) and gives the manager a session with it.
func pair(t *testing.T, ttl int) (*Manager, *responder, *changes, Peer) {
	ch := &changes{}
	m, listen := startManager(t, ch)
	r := newResponder(t, listen, ttl)
	p := Peer{Address: netip.MustParseAddr("127.0.0.2"), Port: r.port(), Interval: 50 * time.Millisecond, Multiplier: 3}
	m.Set([]Peer{p})
	return m, r, ch, p
}

func TestManagerDetectsSilentPeerAndRecovers(t *testing.T) {
	m, r, ch, p := pair(t, 255)
	peer := p.Address
	eventually(t, "session Up", func() bool { return m.States()[peer] == Up })
	r.set(func(r *responder) { r.mute = true })
	eventually(t, "session Down after the peer fell silent", func() bool { return m.States()[peer] == Down })
	r.set(func(r *responder) { r.mute = false; r.s = NewSession(78, 50*time.Millisecond, 50*time.Millisecond, 3) })
	eventually(t, "session Up again", func() bool { return m.States()[peer] == Up })
	if got := ch.list(); len(got) != 3 || !got[0] || got[1] || !got[2] {
		t.Fatalf("changes told = %v, want [up down up]", got)
	}
}

func TestManagerTakesAdminDownForNoFailure(t *testing.T) {
	m, r, ch, p := pair(t, 255)
	peer := p.Address
	eventually(t, "session Up", func() bool { return m.States()[peer] == Up })
	r.set(func(r *responder) { r.s.State = AdminDown })
	eventually(t, "session Down after the peer's AdminDown", func() bool { return m.States()[peer] == Down })
	time.Sleep(100 * time.Millisecond)
	if got := ch.list(); len(got) != 1 || !got[0] {
		t.Fatalf("changes told = %v, want only [up]: an AdminDown is no failure", got)
	}
}

func TestManagerRefusesPacketsRoutedFromAfar(t *testing.T) {
	m, r, _, p := pair(t, 64)
	peer := p.Address
	// The responder hears the manager and goes Init; the manager must
	// never leave Down on packets with TTL 64.
	eventually(t, "responder hears the manager", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.s.State != Down
	})
	time.Sleep(500 * time.Millisecond)
	if st := m.States()[peer]; st != Down {
		t.Fatalf("session %s on packets with TTL 64", st)
	}
}

func TestManagerSetKeepsUnchangedSessions(t *testing.T) {
	m, _, _, p := pair(t, 255)
	peer, want := p.Address, []Peer{p}
	eventually(t, "session Up", func() bool { return m.States()[peer] == Up })
	m.Set(want)
	if st := m.States()[peer]; st != Up {
		t.Fatalf("the same configuration again restarted the session: %s", st)
	}
	m.Set(nil)
	if len(m.States()) != 0 {
		t.Fatal("session left after Set(nil)")
	}
}
