package bfd

import (
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// runner drives one Session: its timers, its socket, its packets.
type runner struct {
	peer     Peer
	disc     uint32
	conn     *net.UDPConn
	log      *slog.Logger
	onChange func(netip.Addr, bool)

	rx        chan Packet
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	state     atomic.Uint32
}

func (r *runner) State() State { return State(r.state.Load()) }

// close ends the session; the peer is told AdminDown so that it does not
// take the end of the session for a failure of the path, and neither is
// onChange told: nothing failed.
func (r *runner) close() {
	r.closeOnce.Do(func() { close(r.stop) })
	<-r.done
}

func (r *runner) run(s *Session) {
	defer close(r.done)
	defer r.conn.Close()
	r.state.Store(uint32(s.State))
	tx := time.NewTimer(0)
	detect := time.NewTimer(time.Hour)
	detect.Stop()
	defer tx.Stop()
	defer detect.Stop()
	for {
		select {
		case <-r.stop:
			s.State, s.Diag = AdminDown, DiagAdminDown
			r.send(s.Packet(false))
			return
		case p := <-r.rx:
			before := s.State
			got := s.Receive(p, time.Now())
			if got.Final {
				r.send(s.Packet(true))
			}
			if s.State == Init || s.State == Up {
				detect.Reset(s.DetectionTime())
			}
			switch {
			case got.Changed:
				r.changed(before, s)
				tx.Reset(0) // the peer hears of the change at once
			case got.Sooner:
				tx.Reset(jitter(s.Interval(), s.DetectMult))
			}
		case <-tx.C:
			r.send(s.Packet(false))
			tx.Reset(jitter(s.Interval(), s.DetectMult))
		case <-detect.C:
			before := s.State
			if s.Expire(time.Now()) {
				r.changed(before, s)
			} else if s.State == Init || s.State == Up {
				detect.Reset(s.DetectionTime()) // woken early: wait again
			}
		}
	}
}

func (r *runner) changed(before State, s *Session) {
	r.state.Store(uint32(s.State))
	r.log.Info("BFD session", "peer", r.peer.Address, "from", before.String(), "to", s.State.String(), "diag", s.Diag)
	// A peer that ends its session (AdminDown) reports no failure of the
	// path (RFC 5882 section 3.2): BGP stays as it is.
	if s.State == Up || before == Up && s.RemoteState != AdminDown {
		r.onChange(r.peer.Address, s.State == Up)
	}
}

func (r *runner) send(p Packet) {
	_, _ = r.conn.WriteToUDPAddrPort(p.Marshal(), netip.AddrPortFrom(r.peer.Address, r.peer.Port))
}

// jitter spreads periodic packets over 75-100% of the interval (75-90%
// with a multiplier of 1), as RFC 5880 section 6.8.7 asks.
func jitter(d time.Duration, mult uint8) time.Duration {
	top := 100
	if mult == 1 {
		top = 90
	}
	return d * time.Duration(75+rand.IntN(top-75+1)) / 100
}
