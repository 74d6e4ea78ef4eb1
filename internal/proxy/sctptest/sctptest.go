// Package sctptest sends and sees SCTP packets through raw sockets, for
// tests of SCTP services on kernels without SCTP sockets: conntrack, NAT
// and nftables handle SCTP packets all the same, and a raw IPPROTO_SCTP
// socket sends them and sees a copy of each one that arrives.
package sctptest

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Init is an SCTP packet holding one INIT chunk (RFC 9260 3.3.2), with its
// CRC32c checksum, as a client's first packet of an association.
func Init(srcPort, dstPort uint16) []byte {
	b := make([]byte, 12+20)
	binary.BigEndian.PutUint16(b[0:], srcPort)
	binary.BigEndian.PutUint16(b[2:], dstPort)
	// Verification tag 0 (INIT), checksum filled below.
	b[12] = 1                                  // INIT
	binary.BigEndian.PutUint16(b[14:], 20)     // chunk length
	binary.BigEndian.PutUint32(b[16:], 0x1234) // initiate tag
	binary.BigEndian.PutUint32(b[20:], 65535)  // a_rwnd
	binary.BigEndian.PutUint16(b[24:], 1)      // outbound streams
	binary.BigEndian.PutUint16(b[26:], 1)      // inbound streams
	binary.BigEndian.PutUint32(b[28:], 1)      // initial TSN
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
	return b
}

// Open opens a raw IPv4 SCTP socket in n with a 2 s receive timeout,
// closed when the test ends.
func Open(t testing.TB, n ns.NetNS) int {
	t.Helper()
	var fd int
	if err := n.Do(func(ns.NetNS) error {
		var err error
		fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, 132)
		return err
	}); err != nil {
		t.Fatalf("raw SCTP socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	tv := syscall.NsecToTimeval(int64(2 * time.Second))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return fd
}

// SendInit sends an INIT from srcPort to ip:port through a raw socket.
func SendInit(fd int, srcPort uint16, ip net.IP, port uint16) error {
	to := &syscall.SockaddrInet4{}
	copy(to.Addr[:], ip.To4())
	return syscall.Sendto(fd, Init(srcPort, port), 0, to)
}

// Seen is the addresses of an SCTP packet as it arrived.
type Seen struct{ Src, Dst string }

// ReadInit returns the addresses of the next INIT that arrives within 3 s
// (ip:port each).
func ReadInit(fd int) (Seen, error) {
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			return Seen{}, err
		}
		if n < 20 {
			continue
		}
		ihl := int(buf[0]&0x0f) * 4
		if n < ihl+12 || buf[ihl+12] != 1 { // an INIT chunk
			continue
		}
		sport, dport := binary.BigEndian.Uint16(buf[ihl:]), binary.BigEndian.Uint16(buf[ihl+2:])
		return Seen{Src: fmt.Sprintf("%s:%d", net.IP(buf[12:16]), sport), Dst: fmt.Sprintf("%s:%d", net.IP(buf[16:20]), dport)}, nil
	}
	return Seen{}, fmt.Errorf("no SCTP INIT arrived")
}
