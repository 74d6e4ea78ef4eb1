package proxy

import (
	"encoding/binary"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// tcpSegment is a bare TCP header (no options, no data) with its checksum
// over the IPv4 pseudo-header, as a raw IPPROTO_TCP socket must send it.
func tcpSegment(src, dst net.IP, sport, dport uint16, flags byte) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 1000) // sequence number
	b[12] = 5 << 4                          // data offset: 5 words
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535) // window
	pseudo := append(append(append([]byte{}, src.To4()...), dst.To4()...), 0, syscall.IPPROTO_TCP, 0, byte(len(b)))
	var sum uint32
	for _, part := range [][]byte{pseudo, b} {
		for i := 0; i+1 < len(part); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(part[i:]))
		}
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(b[16:], ^uint16(sum))
	return b
}

// rawTCP opens a raw IPPROTO_TCP socket in n: it sends hand-made segments
// and sees a copy of every TCP packet that reaches n's addresses.
func rawTCP(t *testing.T, n ns.NetNS) int {
	t.Helper()
	var fd int
	if err := n.Do(func(ns.NetNS) error {
		var err error
		fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_TCP)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	tv := syscall.NsecToTimeval(int64(300 * time.Millisecond))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return fd
}

// seenTCP reports whether a TCP packet with source port sport reaches fd
// within a second.
func seenTCP(fd int, sport uint16) bool {
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil || n < 20 {
			continue
		}
		ihl := int(buf[0]&0x0f) * 4
		if n >= ihl+4 && binary.BigEndian.Uint16(buf[ihl:]) == sport {
			return true
		}
	}
	return false
}

// A forwarded packet that conntrack holds invalid (here SYN and FIN
// together, a combination conntrack never accepts) is dropped by the
// proxy's table; a valid SYN on the same path passes. In liberal mode the
// table has no such rule, and the same invalid packet is forwarded: the
// rule, not something else on the path, is what drops it.
func TestPrivilegedInvalidConntrackStateDropped(t *testing.T) {
	client, server := net.ParseIP("10.244.0.2"), net.ParseIP("10.244.1.2")
	const synFin, syn = 0x03, 0x02
	for _, liberal := range []bool{false, true} {
		tp := newTopo(t)
		startProxyWith(t, tp, Config{ClusterCIDRs: []*net.IPNet{mustCIDR("10.244.0.0/16")},
			ServiceCIDRs: []*net.IPNet{mustCIDR("10.96.0.0/16")}, NodeName: "n1", TCPBeLiberal: liberal})
		out, in := rawTCP(t, tp.client), rawTCP(t, tp.server)
		to := &syscall.SockaddrInet4{}
		copy(to.Addr[:], server.To4())
		send := func(sport uint16, flags byte) bool {
			if err := syscall.Sendto(out, tcpSegment(client, server, sport, 9, flags), 0, to); err != nil {
				t.Fatal(err)
			}
			return seenTCP(in, sport)
		}
		if !send(41000, syn) {
			t.Fatalf("liberal=%v: a valid SYN never reached the server: the path is broken", liberal)
		}
		got := send(41001, synFin)
		if !liberal && got {
			t.Error("an invalid (SYN+FIN) packet was forwarded; want it dropped")
		}
		if liberal && !got {
			t.Error("liberal mode: the invalid packet was dropped; want no drop rule")
		}
	}
}
