// Package bfd is single-hop BFD (RFC 5880, RFC 5881) in asynchronous mode
// without authentication: enough to tell a BGP speaker within a second
// that its peer is gone. It is ours rather than GoBGP's because GoBGP's
// resets a session that is not up by queueing a NOTIFICATION, which then
// kills the next session as soon as it comes up (and, since the router
// drops its BFD session with the BGP one, over and over).
package bfd

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// State is a session state as carried on the wire.
type State uint8

const (
	AdminDown State = 0
	Down      State = 1
	Init      State = 2
	Up        State = 3
)

func (s State) String() string {
	return [...]string{"AdminDown", "Down", "Init", "Up"}[s&3]
}

// Diagnostic codes (RFC 5880 section 4.1) the sessions use.
const (
	DiagNone          = 0
	DiagDetectExpired = 1
	DiagNeighborDown  = 3
	DiagAdminDown     = 7
)

// Packet is a BFD Control packet without authentication section.
type Packet struct {
	Diag        uint8
	State       State
	Poll, Final bool
	DetectMult  uint8
	MyDisc      uint32
	YourDisc    uint32
	// Intervals in microseconds, as on the wire.
	DesiredMinTx, RequiredMinRx, RequiredMinEchoRx uint32
}

const packetLen = 24

// Marshal encodes p as a 24-byte Control packet of version 1.
func (p Packet) Marshal() []byte {
	b := make([]byte, packetLen)
	b[0] = 1<<5 | p.Diag&0x1f
	b[1] = byte(p.State&3) << 6
	if p.Poll {
		b[1] |= 1 << 5
	}
	if p.Final {
		b[1] |= 1 << 4
	}
	b[2] = p.DetectMult
	b[3] = packetLen
	binary.BigEndian.PutUint32(b[4:], p.MyDisc)
	binary.BigEndian.PutUint32(b[8:], p.YourDisc)
	binary.BigEndian.PutUint32(b[12:], p.DesiredMinTx)
	binary.BigEndian.PutUint32(b[16:], p.RequiredMinRx)
	binary.BigEndian.PutUint32(b[20:], p.RequiredMinEchoRx)
	return b
}

var errPacket = errors.New("bfd: invalid packet")

// Parse decodes a Control packet and applies the checks of RFC 5880
// section 6.8.6 that need no session: a packet failing one is discarded.
func Parse(b []byte) (Packet, error) {
	if len(b) < packetLen {
		return Packet{}, fmt.Errorf("%w: %d bytes", errPacket, len(b))
	}
	if v := b[0] >> 5; v != 1 {
		return Packet{}, fmt.Errorf("%w: version %d", errPacket, v)
	}
	length := int(b[3])
	if length < packetLen || length > len(b) {
		return Packet{}, fmt.Errorf("%w: length field %d of %d bytes", errPacket, length, len(b))
	}
	flags := b[1]
	if flags&(1<<2) != 0 { // A: we run no authentication
		return Packet{}, fmt.Errorf("%w: authentication present", errPacket)
	}
	if flags&1 != 0 { // M: reserved for multipoint
		return Packet{}, fmt.Errorf("%w: multipoint bit set", errPacket)
	}
	p := Packet{
		Diag: b[0] & 0x1f, State: State(flags >> 6), Poll: flags&(1<<5) != 0, Final: flags&(1<<4) != 0,
		DetectMult: b[2], MyDisc: binary.BigEndian.Uint32(b[4:]), YourDisc: binary.BigEndian.Uint32(b[8:]),
		DesiredMinTx: binary.BigEndian.Uint32(b[12:]), RequiredMinRx: binary.BigEndian.Uint32(b[16:]),
		RequiredMinEchoRx: binary.BigEndian.Uint32(b[20:]),
	}
	switch {
	case p.DetectMult == 0:
		return Packet{}, fmt.Errorf("%w: detect multiplier 0", errPacket)
	case p.MyDisc == 0:
		return Packet{}, fmt.Errorf("%w: my discriminator 0", errPacket)
	case p.YourDisc == 0 && p.State != Down && p.State != AdminDown:
		return Packet{}, fmt.Errorf("%w: your discriminator 0 in state %s", errPacket, p.State)
	}
	return p, nil
}
