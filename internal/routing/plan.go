// Package routing connects pod networks across nodes. The planning here is
// pure: from the local node and one peer it derives the kernel entries
// (routes, VXLAN FDB and neighbour entries) a backend wants. The netlink
// writer in writer.go applies plans; the controller in controller.go runs
// them through a keyed workqueue.
package routing

import (
	"crypto/sha256"
	"fmt"
	"net"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// Backend names.
const (
	BackendVXLAN  = "vxlan"
	BackendHostGW = "host-gw"
	BackendAuto   = "auto"
	// BackendBGP: routes learned over BGP (internal/routing/bgp), no
	// encapsulation.
	BackendBGP = "bgp"
)

// UsesVXLAN reports whether a backend needs the node's VXLAN device.
func UsesVXLAN(backend string) bool {
	return backend == BackendVXLAN || backend == BackendAuto
}

// Node annotations the agent publishes for its peers.
const (
	AnnotationVTEPMAC = "weft.dev/vxlan-vtep-mac"
	AnnotationVTEPIP  = "weft.dev/vxlan-vtep-ip"
	AnnotationBackend = "weft.dev/backend"
)

// VXLANOverhead is what VXLAN over IPv4 adds to a packet (outer IP 20,
// UDP 8, VXLAN 8, inner Ethernet 14).
const VXLANOverhead = 50

// Mode is how one peer is reached.
type Mode string

const (
	ModeDirect      Mode = "direct"      // host-gw: route via the peer's node IP
	ModeVXLAN       Mode = "vxlan"       // encapsulated
	ModeUnreachable Mode = "unreachable" // host-gw to a peer on another L2 segment
	ModeNotReady    Mode = "not-ready"   // peer lacks podCIDR, IP or VTEP data
	ModeRefused     Mode = "refused"     // peer's podCIDR is not one we may route
)

// Local describes this node.
type Local struct {
	Name     string
	NodeIP   net.IP
	Underlay *net.IPNet // the L2 subnet of the node's underlay interface
	Backend  string
	// ClusterCIDRs, when set, hold every pod CIDR a peer may have; a peer's
	// podCIDR outside them is refused.
	ClusterCIDRs []*net.IPNet
	// Reserved are networks a peer's podCIDR may never overlap: this node's
	// own pod CIDRs, the service CIDRs. The underlay subnet is always one.
	Reserved []*net.IPNet
}

// Peer is another node, as read from its Node object.
type Peer struct {
	Name   string
	NodeIP net.IP
	// NodeIP6: the node's IPv6 InternalIP on a dual-stack underlay (host-gw
	// routes its IPv6 pod CIDR via it); nil on an IPv4 underlay.
	NodeIP6  net.IP
	PodCIDRs []*net.IPNet
	VTEPMAC  net.HardwareAddr
	VTEPIP   net.IP
}

// Route is a route to a peer's pod CIDR.
type Route struct {
	Dst *net.IPNet
	Via net.IP
	// OverVXLAN routes leave through the VXLAN device (onlink), others
	// through the underlay interface.
	OverVXLAN bool
}

// PeerPlan is everything the kernel needs for one peer.
type PeerPlan struct {
	Peer   string
	Mode   Mode
	Reason string
	Routes []Route
	// VXLAN only: the peer's VTEP (inner address and MAC) and where to
	// send its frames (the peer's underlay IP). VTEPIP6 is its inner IPv6
	// address when the peer has an IPv6 pod CIDR (IPv6 pods over an IPv4
	// underlay).
	VTEPIP  net.IP
	VTEPIP6 net.IP
	VTEPMAC net.HardwareAddr
	FDBDst  net.IP
}

// PeerFromNode extracts a Peer from a Node object; missing data is left
// empty and makes PlanPeer return ModeNotReady.
func PeerFromNode(n *corev1.Node) Peer {
	p := Peer{Name: n.Name}
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip := net.ParseIP(a.Address)
		switch {
		case ip == nil:
		case p.NodeIP == nil:
			p.NodeIP = ip
		case p.NodeIP6 == nil && ip.To4() == nil && p.NodeIP.To4() != nil:
			p.NodeIP6 = ip
		}
	}
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		if _, nw, err := net.ParseCIDR(c); err == nil {
			p.PodCIDRs = append(p.PodCIDRs, nw)
		}
	}
	if mac, err := net.ParseMAC(n.Annotations[AnnotationVTEPMAC]); err == nil {
		p.VTEPMAC = mac
	}
	p.VTEPIP = net.ParseIP(n.Annotations[AnnotationVTEPIP])
	return p
}

// VTEPAddress is the inner address of a node's VXLAN device: the network
// address of its IPv4 pod CIDR (never handed to a pod).
func VTEPAddress(podCIDRs []*net.IPNet) net.IP {
	for _, c := range podCIDRs {
		if v4 := c.IP.To4(); v4 != nil {
			return v4.Mask(c.Mask)
		}
	}
	return nil
}

// VTEPAddress6 is the inner IPv6 address of a node's VXLAN device: the
// network address of its IPv6 pod CIDR (never handed to a pod either).
func VTEPAddress6(podCIDRs []*net.IPNet) net.IP {
	for _, c := range podCIDRs {
		if c.IP.To4() == nil {
			return c.IP.Mask(c.Mask)
		}
	}
	return nil
}

// VTEPMAC derives a stable, locally administered MAC from the node name,
// so an agent restart recreating the device keeps the same address and
// peers' FDB entries stay valid.
func VTEPMAC(nodeName string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("weft-vtep/" + nodeName))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// PlanPeer decides how to reach peer and which entries that takes.
func PlanPeer(local Local, peer Peer) PeerPlan {
	plan := PeerPlan{Peer: peer.Name}
	if len(peer.PodCIDRs) == 0 {
		plan.Mode, plan.Reason = ModeNotReady, "no podCIDR yet"
		return plan
	}
	if peer.NodeIP == nil {
		plan.Mode, plan.Reason = ModeNotReady, "no InternalIP"
		return plan
	}
	// Node objects are written by kubelets: a compromised node must not
	// pull another network's traffic to itself with a route.
	if reason := local.refuse(peer.PodCIDRs); reason != "" {
		plan.Mode, plan.Reason = ModeRefused, reason
		return plan
	}
	sameL2 := local.Underlay != nil && local.Underlay.Contains(peer.NodeIP)
	mode := ModeVXLAN
	switch local.Backend {
	case BackendHostGW:
		mode = ModeDirect
		if !sameL2 {
			plan.Mode = ModeUnreachable
			plan.Reason = fmt.Sprintf("host-gw cannot reach %s: its IP %s is outside this node's L2 subnet %s; use the vxlan or auto backend", peer.Name, peer.NodeIP, local.Underlay)
			return plan
		}
	case BackendAuto:
		if sameL2 {
			mode = ModeDirect
		}
	}
	plan.Mode = mode
	switch mode {
	case ModeDirect:
		for _, c := range peer.PodCIDRs {
			switch {
			case (c.IP.To4() != nil) == (peer.NodeIP.To4() != nil):
				plan.Routes = append(plan.Routes, Route{Dst: c, Via: peer.NodeIP})
			case peer.NodeIP6 != nil && c.IP.To4() == nil:
				plan.Routes = append(plan.Routes, Route{Dst: c, Via: peer.NodeIP6})
			}
		}
	case ModeVXLAN:
		vtep := VTEPAddress(peer.PodCIDRs)
		if peer.VTEPMAC == nil || vtep == nil {
			plan.Mode, plan.Reason = ModeNotReady, "no VXLAN VTEP published yet"
			return plan
		}
		dst := peer.VTEPIP
		if dst == nil {
			dst = peer.NodeIP
		}
		plan.VTEPIP, plan.VTEPMAC, plan.FDBDst = vtep, peer.VTEPMAC, dst
		plan.VTEPIP6 = VTEPAddress6(peer.PodCIDRs)
		for _, c := range peer.PodCIDRs {
			via := vtep
			if c.IP.To4() == nil {
				via = plan.VTEPIP6
			}
			plan.Routes = append(plan.Routes, Route{Dst: c, Via: via, OverVXLAN: true})
		}
	}
	return plan
}

// refuse says why a peer's pod CIDRs may not be routed, or "".
func (l Local) refuse(cidrs []*net.IPNet) string {
	reserved := l.Reserved
	if l.Underlay != nil {
		reserved = append([]*net.IPNet{l.Underlay}, reserved...)
	}
	for _, c := range cidrs {
		if len(l.ClusterCIDRs) > 0 && !slices.ContainsFunc(l.ClusterCIDRs, func(n *net.IPNet) bool { return within(c, n) }) {
			return fmt.Sprintf("podCIDR %s is outside the cluster CIDRs %v", c, l.ClusterCIDRs)
		}
		for _, r := range reserved {
			if overlaps(c, r) {
				return fmt.Sprintf("podCIDR %s overlaps %s, a network of node %s", c, r, l.Name)
			}
		}
	}
	return ""
}

// within reports whether inner lies entirely inside outer.
func within(inner, outer *net.IPNet) bool {
	io, _ := inner.Mask.Size()
	oo, _ := outer.Mask.Size()
	return io >= oo && outer.Contains(inner.IP)
}

func overlaps(a, b *net.IPNet) bool {
	return a.Contains(b.IP) || b.Contains(a.IP)
}

// MTUFor returns the pod MTU for an underlay MTU and a backend.
func MTUFor(backend string, underlayMTU int) int {
	if !UsesVXLAN(backend) {
		return underlayMTU
	}
	// vxlan, and auto (some peers may be across subnets).
	return underlayMTU - VXLANOverhead
}

// Key identifies a plan's entries for comparisons.
func (p PeerPlan) Key() string {
	s := string(p.Mode)
	for _, r := range p.Routes {
		s += "|" + r.Dst.String() + ">" + r.Via.String() + strconv.FormatBool(r.OverVXLAN)
	}
	return s + "|" + p.VTEPIP.String() + "|" + p.VTEPIP6.String() + "|" + p.VTEPMAC.String() + "|" + p.FDBDst.String()
}
