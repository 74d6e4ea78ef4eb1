package netpol

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The parts of the kernel's nfnetlink_log protocol the reader uses
// (linux/netfilter/nfnetlink_log.h).
const (
	nfnlSubsysULOG   = 4
	nfulnlMsgPacket  = 0
	nfulnlMsgConfig  = 1
	nfulaCfgCmd      = 1
	nfulaCfgMode     = 2
	nfulnlCfgCmdBind = 1
	nfulnlCopyPacket = 2
	nfulaPayload     = 9
	nfulaPrefix      = 10
	// copyRange: enough of each packet for the IP and transport headers.
	copyRange = 128
)

// Denied is one denied packet as the kernel reported it.
type Denied struct {
	Direction string // ingress or egress
	// Tier and Policy name the ClusterNetworkPolicy whose Deny rule
	// dropped the packet; both are empty for NetworkPolicy's deny chains.
	Tier, Policy string
	Proto        string
	Src, Dst     netip.AddrPort
}

// ReadDenials reads the packets the deny chains log to NFLogGroup and calls
// fn for each until ctx ends. It must run in the node's network namespace.
func ReadDenials(ctx context.Context, fn func(Denied)) error {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return fmt.Errorf("nflog: %w", err)
	}
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	if err := nflogBind(conn, NFLogGroup); err != nil {
		return err
	}
	for {
		msgs, err := conn.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// A burst overran the socket buffer: those reports are lost,
			// the next ones still come.
			if errors.Is(err, unix.ENOBUFS) {
				continue
			}
			return fmt.Errorf("nflog: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != netlink.HeaderType(nfnlSubsysULOG<<8|nfulnlMsgPacket) {
				continue
			}
			if d, ok := parseNFLog(m.Data); ok {
				fn(d)
			}
		}
	}
}

func nflogBind(conn *netlink.Conn, group uint16) error {
	for _, attr := range []func(*netlink.AttributeEncoder){
		func(ae *netlink.AttributeEncoder) { ae.Bytes(nfulaCfgCmd, []byte{nfulnlCfgCmdBind}) },
		func(ae *netlink.AttributeEncoder) {
			mode := make([]byte, 6)
			binary.BigEndian.PutUint32(mode, copyRange)
			mode[4] = nfulnlCopyPacket
			ae.Bytes(nfulaCfgMode, mode)
		},
	} {
		ae := netlink.NewAttributeEncoder()
		attr(ae)
		b, err := ae.Encode()
		if err != nil {
			return err
		}
		hdr := []byte{unix.AF_UNSPEC, 0, 0, 0}
		binary.BigEndian.PutUint16(hdr[2:], group)
		req := netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysULOG<<8 | nfulnlMsgConfig),
			Flags: netlink.Request | netlink.Acknowledge}, Data: append(hdr, b...)}
		if _, err := conn.Execute(req); err != nil {
			return fmt.Errorf("nflog: bind group %d: %w", group, err)
		}
	}
	return nil
}

// parseNFLog reads one packet message: the generic header, then
// attributes, of which the prefix and the payload matter.
func parseNFLog(data []byte) (Denied, bool) {
	if len(data) < 4 {
		return Denied{}, false
	}
	ad, err := netlink.NewAttributeDecoder(data[4:])
	if err != nil {
		return Denied{}, false
	}
	var d Denied
	var payload []byte
	for ad.Next() {
		switch ad.Type() {
		case nfulaPrefix:
			d.Direction, d.Tier, d.Policy = splitPrefix(ad.String())
		case nfulaPayload:
			payload = ad.Bytes()
		}
	}
	if ad.Err() != nil || payload == nil {
		return Denied{}, false
	}
	return d, parsePacket(payload, &d)
}

// parsePacket reads addresses, protocol and ports of an IPv4 or IPv6
// packet (IPv6 extension headers are not walked: ports stay 0).
func parsePacket(b []byte, d *Denied) bool {
	if len(b) < 1 {
		return false
	}
	var proto byte
	var src, dst netip.Addr
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		ihl := int(b[0]&0x0f) * 4
		if len(b) < 20 || ihl < 20 || len(b) < ihl {
			return false
		}
		proto = b[9]
		src, _ = netip.AddrFromSlice(b[12:16])
		dst, _ = netip.AddrFromSlice(b[16:20])
		l4 = b[ihl:]
	case 6:
		if len(b) < 40 {
			return false
		}
		proto = b[6]
		src, _ = netip.AddrFromSlice(b[8:24])
		dst, _ = netip.AddrFromSlice(b[24:40])
		l4 = b[40:]
	default:
		return false
	}
	var sport, dport uint16
	switch proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_SCTP:
		if len(l4) >= 4 {
			sport, dport = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		}
	}
	d.Proto = protoNames[proto]
	if d.Proto == "" {
		d.Proto = fmt.Sprint(proto)
	}
	d.Src, d.Dst = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
	return true
}

var protoNames = map[byte]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp", unix.IPPROTO_SCTP: "sctp",
	unix.IPPROTO_ICMP: "icmp", unix.IPPROTO_ICMPV6: "icmpv6"}

// splitPrefix reads a deny chain's log prefix: "<direction>" for
// NetworkPolicy, "<direction> <tier> <policy>" for a cluster policy.
func splitPrefix(prefix string) (direction, tier, policy string) {
	direction, rest, _ := strings.Cut(prefix, " ")
	tier, policy, _ = strings.Cut(rest, " ")
	return direction, tier, policy
}
