package dns

import (
	"encoding/binary"
	"sync"

	"github.com/miekg/dns"
)

// wireAnswers keeps packed responses to the plainest queries (see
// plainQuery) whose answer depends on the snapshot alone, keyed by the
// query's bytes past its ID, for the snapshot they were built from. Such
// a query's response is then the stored one with the query's ID: the UDP
// loop skips unpacking the query, resolving and packing (most of a
// cluster name's cost). A new snapshot empties it.
type wireAnswers struct {
	mu    sync.RWMutex
	snap  *Snapshot
	m     map[string]wireAnswer
	bytes int
}

type wireAnswer struct {
	resp  []byte
	qtype uint16
	rcode int
}

// wireAnswersMax bounds the stored bytes; past it the store starts over
// (queries for service names repeat: what is asked again comes back).
const wireAnswersMax = 4 << 20

// get appends the response to wire, built for snap, to out (false: none
// stored).
func (w *wireAnswers) get(snap *Snapshot, wire, out []byte) ([]byte, wireAnswer, bool) {
	w.mu.RLock()
	a, ok := w.m[string(wire[2:])]
	ok = ok && w.snap == snap
	w.mu.RUnlock()
	if !ok {
		return nil, a, false
	}
	out = append(out, a.resp...)
	copy(out[:2], wire[:2])
	return out, a, true
}

// put stores resp, packed, as the response to wire under snap.
func (w *wireAnswers) put(snap *Snapshot, wire, resp []byte, qtype uint16, rcode int) {
	key := string(wire[2:])
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.snap != snap || w.bytes+len(key)+len(resp) > wireAnswersMax {
		w.snap, w.m, w.bytes = snap, map[string]wireAnswer{}, 0
	}
	if _, ok := w.m[key]; !ok {
		w.m[key] = wireAnswer{resp: append([]byte(nil), resp...), qtype: qtype, rcode: rcode}
		w.bytes += len(key) + len(resp)
	}
}

// plainQuery reports whether wire is a query the stored responses may
// answer: a standard query (QR, opcode, AA, TC and Z clear, no rcode) of
// one question of class IN, no answer or authority records, and at most
// an OPT record of version 0 without options or extended flags but DO;
// nothing after it. Any two such queries with the same bytes past the
// ID get the same response from the same snapshot. qtype is the
// question's type.
func plainQuery(wire []byte) (qtype uint16, ok bool) {
	if len(wire) < 12 {
		return 0, false
	}
	flags := binary.BigEndian.Uint16(wire[2:])
	// QR, opcode, AA, TC, Z, AD and RCODE must be 0 (RD and CD may be set).
	if flags&^(1<<8|1<<4) != 0 {
		return 0, false
	}
	qd, an, ns, ar := binary.BigEndian.Uint16(wire[4:]), binary.BigEndian.Uint16(wire[6:]), binary.BigEndian.Uint16(wire[8:]), binary.BigEndian.Uint16(wire[10:])
	if qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return 0, false
	}
	off, ok := nameEnd(wire, 12)
	if !ok || off+4 > len(wire) {
		return 0, false
	}
	qtype = binary.BigEndian.Uint16(wire[off:])
	if binary.BigEndian.Uint16(wire[off+2:]) != dns.ClassINET {
		return 0, false
	}
	off += 4
	if ar == 0 {
		return qtype, off == len(wire)
	}
	// OPT: root name, type 41, class = UDP size, TTL = extended rcode,
	// version and flags (DO only), no data.
	if off+11 != len(wire) || wire[off] != 0 || binary.BigEndian.Uint16(wire[off+1:]) != dns.TypeOPT {
		return 0, false
	}
	ttl := binary.BigEndian.Uint32(wire[off+5:])
	if ttl&^(1<<15) != 0 || binary.BigEndian.Uint16(wire[off+9:]) != 0 {
		return 0, false
	}
	return qtype, true
}

// nameEnd returns the offset past the uncompressed name at off (labels of
// 1-63 bytes, 255 bytes at most); false for a pointer or a malformed name.
func nameEnd(wire []byte, off int) (int, bool) {
	total := 0
	for off < len(wire) {
		n := int(wire[off])
		if n == 0 {
			return off + 1, total+1 <= 255
		}
		if n > 63 {
			return 0, false
		}
		total += n + 1
		off += n + 1
	}
	return 0, false
}
