package proxy

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// sctpInit is an SCTP packet holding one INIT chunk (RFC 9260 3.3.2),
// with its CRC32c checksum, as a client's first packet of an association.
func sctpInit(srcPort, dstPort uint16) []byte {
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

// rawSCTP opens a raw IPPROTO_SCTP socket in n: this kernel has no SCTP
// sockets (EPROTONOSUPPORT), but conntrack, NAT and nftables handle SCTP
// packets, and a raw socket sends and sees them.
func rawSCTP(t *testing.T, n ns.NetNS) int {
	t.Helper()
	var fd int
	if err := n.Do(func(ns.NetNS) error {
		var err error
		fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, 132)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	tv := syscall.NsecToTimeval(int64(2 * time.Second))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return fd
}

// SCTP ClusterIP and NodePort: real SCTP packets are DNATed to the
// endpoint (address and port rewritten, checksum redone by the kernel),
// the client's address kept for pod traffic.
func TestPrivilegedSCTPServiceDNAT(t *testing.T) {
	tp := newTopo(t)
	svc := service("assoc", "10.96.0.60", 80, 30090)
	svc.Spec.Ports[0].Protocol = corev1.ProtocolSCTP
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "assoc-abc", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "assoc"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolSCTP)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
	startProxy(t, tp, svc, sl)
	server, client := rawSCTP(t, tp.server), rawSCTP(t, tp.client)
	for i, dst := range []struct {
		ip   string
		port uint16
	}{{"10.96.0.60", 80}, {"198.18.100.1", 30090}} {
		src := uint16(40000 + i)
		to := &syscall.SockaddrInet4{}
		copy(to.Addr[:], net.ParseIP(dst.ip).To4())
		if err := syscall.Sendto(client, sctpInit(src, dst.port), 0, to); err != nil {
			t.Fatalf("send to %s: %v", dst.ip, err)
		}
		got, err := readSCTP(server, src)
		if err != nil {
			t.Fatalf("SCTP INIT to %s:%d never reached the endpoint: %v", dst.ip, dst.port, err)
		}
		if got.dst != "10.244.1.2:8080" {
			t.Errorf("SCTP to %s:%d arrived as %s, want 10.244.1.2:8080", dst.ip, dst.port, got.dst)
		}
		// Pod → ClusterIP keeps the pod's address; NodePort traffic is
		// masqueraded (externalTrafficPolicy Cluster).
		if dst.port == 80 && got.src != "10.244.0.2" {
			t.Errorf("pod → SCTP ClusterIP arrived from %s, want the pod's address", got.src)
		}
		if dst.port == 30090 && got.src == "10.244.0.2" {
			t.Errorf("SCTP NodePort traffic not masqueraded (from %s)", got.src)
		}
	}
}

type sctpSeen struct{ src, dst string }

// readSCTP returns the addresses of the next SCTP packet with source port
// src (or its masqueraded form: any source port) seen by a raw socket.
func readSCTP(fd int, src uint16) (sctpSeen, error) {
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			return sctpSeen{}, err
		}
		if n < 20 {
			continue
		}
		ihl := int(buf[0]&0x0f) * 4
		if n < ihl+12 || buf[ihl+12] != 1 { // an INIT chunk
			continue
		}
		ipSrc, ipDst := net.IP(buf[12:16]).String(), net.IP(buf[16:20]).String()
		dport := binary.BigEndian.Uint16(buf[ihl+2:])
		return sctpSeen{src: ipSrc, dst: fmt.Sprintf("%s:%d", ipDst, dport)}, nil
	}
	return sctpSeen{}, fmt.Errorf("timeout")
}
