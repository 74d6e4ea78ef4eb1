package bfd

import "time"

// slowTx is the transmit interval of a session that is not Up (RFC 5880
// section 6.8.3: at least one second, so idle sessions cost nothing).
const slowTx = time.Second

// Session is one BFD session's state machine, without clocks or sockets:
// the caller feeds it packets and the time, and sends what it returns.
type Session struct {
	LocalDisc  uint32
	RemoteDisc uint32
	State      State
	Diag       uint8
	// RemoteState is the state the peer last sent.
	RemoteState State

	// Ours: what we want to send at and can receive at once Up.
	TxInterval, RxInterval time.Duration
	DetectMult             uint8

	remoteMinRx      time.Duration
	remoteDesiredTx  time.Duration
	remoteDetectMult uint8
	polling          bool // a Poll Sequence for our new intervals
	lastRx           time.Time
}

// NewSession starts in Down with the given discriminator (non-zero,
// unique on this system) and the intervals to use once Up.
func NewSession(disc uint32, tx, rx time.Duration, mult uint8) *Session {
	return &Session{LocalDisc: disc, State: Down, RemoteState: Down, TxInterval: tx, RxInterval: rx, DetectMult: mult, remoteMinRx: time.Microsecond}
}

// advertised returns the intervals we put on the wire: slow until Up.
func (s *Session) advertised() (tx, rx time.Duration) {
	if s.State != Up {
		return max(s.TxInterval, slowTx), s.RxInterval
	}
	return s.TxInterval, s.RxInterval
}

// Packet is what we send now; final answers a Poll.
func (s *Session) Packet(final bool) Packet {
	tx, rx := s.advertised()
	return Packet{Diag: s.Diag, State: s.State, Poll: s.polling && !final, Final: final, DetectMult: s.DetectMult,
		MyDisc: s.LocalDisc, YourDisc: s.RemoteDisc, DesiredMinTx: uint32(tx.Microseconds()), RequiredMinRx: uint32(rx.Microseconds())}
}

// Interval is the time between our periodic packets (before jitter): our
// advertised rate, never faster than the remote can receive.
func (s *Session) Interval() time.Duration {
	tx, _ := s.advertised()
	return max(tx, s.remoteMinRx)
}

// DetectionTime is how long the session may go without a packet while
// Init or Up: the remote's multiplier times the slower of its send rate
// and our receive rate.
func (s *Session) DetectionTime() time.Duration {
	_, rx := s.advertised()
	return time.Duration(s.remoteDetectMult) * max(rx, s.remoteDesiredTx)
}

// Received is what a packet did to the session.
type Received struct {
	Changed bool // the state changed
	Final   bool // a Poll to answer now
	// Sooner: the interval got shorter (the peer switched to its fast
	// rate): the next packet must not wait out the old one, or the peer's
	// new, shorter detection time runs out.
	Sooner bool
}

// Receive applies a parsed packet (RFC 5880 section 6.8.6).
func (s *Session) Receive(p Packet, now time.Time) Received {
	if p.YourDisc != 0 && p.YourDisc != s.LocalDisc {
		return Received{}
	}
	interval := s.Interval()
	s.RemoteDisc, s.RemoteState = p.MyDisc, p.State
	s.remoteMinRx = time.Duration(p.RequiredMinRx) * time.Microsecond
	s.remoteDesiredTx = time.Duration(p.DesiredMinTx) * time.Microsecond
	s.remoteDetectMult = p.DetectMult
	s.lastRx = now
	if p.Final {
		s.polling = false
	}
	before := s.State
	switch {
	case p.State == AdminDown:
		if s.State != Down {
			s.down(DiagNeighborDown)
		}
	case s.State == Down && p.State == Down:
		s.State = Init
	case s.State == Down && p.State == Init, s.State == Init && (p.State == Init || p.State == Up):
		s.State, s.Diag = Up, DiagNone
		s.polling = true // our fast intervals take effect through a Poll
	case s.State == Up && p.State == Down:
		s.down(DiagNeighborDown)
	}
	return Received{Changed: s.State != before, Final: p.Poll, Sooner: s.Interval() < interval}
}

// Expire moves an Init or Up session whose detection time passed without
// a packet to Down, and reports whether it did.
func (s *Session) Expire(now time.Time) bool {
	if s.State != Init && s.State != Up || now.Sub(s.lastRx) < s.DetectionTime() {
		return false
	}
	s.down(DiagDetectExpired)
	s.RemoteDisc = 0
	return true
}

func (s *Session) down(diag uint8) {
	s.State, s.Diag, s.polling = Down, diag, false
}
