package bfd

import (
	"testing"
	"time"
)

// exchange delivers a's packet to b and b's to a once.
func exchange(t *testing.T, a, b *Session, now time.Time) {
	t.Helper()
	pa, pb := a.Packet(false), b.Packet(false)
	b.Receive(mustParse(t, pa), now)
	a.Receive(mustParse(t, pb), now)
}

func mustParse(t *testing.T, p Packet) Packet {
	t.Helper()
	got, err := Parse(p.Marshal())
	if err != nil {
		t.Fatalf("own packet %+v rejected: %v", p, err)
	}
	return got
}

func upPair(t *testing.T, now time.Time) (*Session, *Session) {
	a := NewSession(1, 100*time.Millisecond, 100*time.Millisecond, 3)
	b := NewSession(2, 100*time.Millisecond, 100*time.Millisecond, 3)
	for i := 0; i < 3 && (a.State != Up || b.State != Up); i++ {
		exchange(t, a, b, now)
	}
	if a.State != Up || b.State != Up {
		t.Fatalf("three-way handshake: a %s b %s", a.State, b.State)
	}
	return a, b
}

func TestSessionsComeUpAndLearnEachOther(t *testing.T) {
	now := time.Now()
	a, b := upPair(t, now)
	if a.RemoteDisc != 2 || b.RemoteDisc != 1 {
		t.Fatalf("discriminators: a knows %d, b knows %d", a.RemoteDisc, b.RemoteDisc)
	}
	exchange(t, a, b, now)
	if got := a.DetectionTime(); got != 300*time.Millisecond {
		t.Fatalf("detection time once both are Up = %v, want 300ms", got)
	}
	if a.Interval() != 100*time.Millisecond {
		t.Fatalf("interval when Up = %v", a.Interval())
	}
}

func TestSessionIsSlowUntilUp(t *testing.T) {
	s := NewSession(1, 100*time.Millisecond, 100*time.Millisecond, 3)
	if s.Interval() < time.Second || s.Packet(false).DesiredMinTx < 1_000_000 {
		t.Fatalf("a Down session sends every %v advertising %d µs; RFC 5880 wants ≥ 1 s", s.Interval(), s.Packet(false).DesiredMinTx)
	}
}

func TestSessionExpiresWithoutPackets(t *testing.T) {
	now := time.Now()
	a, b := upPair(t, now)
	exchange(t, a, b, now)
	if a.Expire(now.Add(250 * time.Millisecond)) {
		t.Fatal("expired before the detection time")
	}
	if !a.Expire(now.Add(300*time.Millisecond)) || a.State != Down || a.Diag != DiagDetectExpired || a.RemoteDisc != 0 {
		t.Fatalf("after the detection time: state %s diag %d remote %d", a.State, a.Diag, a.RemoteDisc)
	}
	// b learns of it from a's Down and goes Down too; then both come back.
	b.Receive(mustParse(t, a.Packet(false)), now)
	if b.State != Down || b.Diag != DiagNeighborDown {
		t.Fatalf("b after a's Down: %s diag %d", b.State, b.Diag)
	}
	for range 3 {
		exchange(t, a, b, now)
	}
	if a.State != Up || b.State != Up {
		t.Fatalf("after recovery: a %s b %s", a.State, b.State)
	}
}

func TestSessionHonoursAdminDown(t *testing.T) {
	now := time.Now()
	a, b := upPair(t, now)
	b.State = AdminDown
	a.Receive(mustParse(t, b.Packet(false)), now)
	if a.State != Down || a.RemoteState != AdminDown {
		t.Fatalf("after the peer's AdminDown: %s (remote %s)", a.State, a.RemoteState)
	}
}

func TestSessionIgnoresPacketsOfOtherSessions(t *testing.T) {
	now := time.Now()
	a, b := upPair(t, now)
	p := b.Packet(false)
	p.YourDisc, p.State = 99, Down
	if got := a.Receive(mustParse(t, p), now); got.Changed || a.State != Up {
		t.Fatalf("a packet for discriminator 99 changed the session: %s", a.State)
	}
	if a.Expire(now.Add(250 * time.Millisecond)) {
		t.Fatal("a foreign packet must not count as heard from the peer")
	}
}

func TestSessionAnswersPollWithFinal(t *testing.T) {
	now := time.Now()
	a, b := upPair(t, now)
	p := b.Packet(false)
	if !p.Poll {
		t.Fatal("a session that just came Up polls for its fast intervals")
	}
	if got := a.Receive(mustParse(t, p), now); !got.Final {
		t.Fatal("no Final owed for a Poll")
	}
	b.Receive(mustParse(t, a.Packet(true)), now)
	if b.Packet(false).Poll {
		t.Fatal("the Final did not end b's Poll Sequence")
	}
}

func TestParseRejects(t *testing.T) {
	good := Packet{State: Up, DetectMult: 3, MyDisc: 1, YourDisc: 2, DesiredMinTx: 1, RequiredMinRx: 1}
	if _, err := Parse(good.Marshal()); err != nil {
		t.Fatalf("good packet: %v", err)
	}
	for name, edit := range map[string]func([]byte) []byte{
		"short":             func(b []byte) []byte { return b[:20] },
		"version 0":         func(b []byte) []byte { b[0] &^= 0xe0; return b },
		"length over data":  func(b []byte) []byte { b[3] = 30; return b },
		"length under 24":   func(b []byte) []byte { b[3] = 20; return b },
		"authentication":    func(b []byte) []byte { b[1] |= 1 << 2; return b },
		"multipoint":        func(b []byte) []byte { b[1] |= 1; return b },
		"multiplier 0":      func(b []byte) []byte { b[2] = 0; return b },
		"my disc 0":         func(b []byte) []byte { b[4], b[5], b[6], b[7] = 0, 0, 0, 0; return b },
		"your disc 0 in Up": func(b []byte) []byte { b[8], b[9], b[10], b[11] = 0, 0, 0, 0; return b },
	} {
		if _, err := Parse(edit(good.Marshal())); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Packet{State: Down, DetectMult: 3, MyDisc: 7}.Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		s := NewSession(5, 100*time.Millisecond, 100*time.Millisecond, 3)
		s.Receive(p, time.Now())
		if s.State > Up {
			t.Fatalf("state %d", s.State)
		}
	})
}

// A peer that is slow until Up (FRR's bfdd asks for 1 s) and then polls
// with its fast rate must get our packets at the fast rate at once.
func TestSessionSpeedsUpWhenThePeerDoes(t *testing.T) {
	now := time.Now()
	a, b := upPair(t, now)
	slow := b.Packet(false)
	slow.RequiredMinRx = 1_000_000
	a.Receive(mustParse(t, slow), now)
	if a.Interval() != time.Second {
		t.Fatalf("interval while the peer asks for 1 s = %v", a.Interval())
	}
	fast := b.Packet(false)
	fast.RequiredMinRx, fast.Poll = 100_000, true
	if got := a.Receive(mustParse(t, fast), now); !got.Sooner || !got.Final || a.Interval() != 100*time.Millisecond {
		t.Fatalf("peer switched to 100 ms: %+v, interval %v", got, a.Interval())
	}
	if got := a.Receive(mustParse(t, fast), now); got.Sooner {
		t.Fatal("the same rate again reported as sooner")
	}
}
