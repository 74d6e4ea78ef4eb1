package routing

import (
	"fmt"
	"net"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func cidr(s string) *net.IPNet { _, n, _ := net.ParseCIDR(s); return n }

func TestPlanPeer(t *testing.T) {
	mac := VTEPMAC("b")
	sameRack := Peer{Name: "b", NodeIP: net.ParseIP("198.18.1.12"), PodCIDRs: []*net.IPNet{cidr("10.244.2.0/24")}, VTEPMAC: mac}
	otherRack := Peer{Name: "c", NodeIP: net.ParseIP("198.18.2.13"), PodCIDRs: []*net.IPNet{cidr("10.244.3.0/24")}, VTEPMAC: VTEPMAC("c")}
	local := func(b string) Local {
		return Local{Name: "a", NodeIP: net.ParseIP("198.18.1.11"), Underlay: cidr("198.18.1.0/24"), Backend: b}
	}
	cases := []struct {
		backend string
		peer    Peer
		mode    Mode
		via     string
		vxlan   bool
	}{
		{BackendHostGW, sameRack, ModeDirect, "198.18.1.12", false},
		{BackendHostGW, otherRack, ModeUnreachable, "", false},
		{BackendVXLAN, sameRack, ModeVXLAN, "10.244.2.0", true},
		{BackendVXLAN, otherRack, ModeVXLAN, "10.244.3.0", true},
		{BackendAuto, sameRack, ModeDirect, "198.18.1.12", false},
		{BackendAuto, otherRack, ModeVXLAN, "10.244.3.0", true},
	}
	for _, c := range cases {
		p := PlanPeer(local(c.backend), c.peer)
		if p.Mode != c.mode {
			t.Errorf("%s → %s: mode %s, want %s (%s)", c.backend, c.peer.Name, p.Mode, c.mode, p.Reason)
			continue
		}
		if c.via == "" {
			if len(p.Routes) != 0 {
				t.Errorf("%s → %s: routes %v for an unreachable peer", c.backend, c.peer.Name, p.Routes)
			}
			if !strings.Contains(p.Reason, "outside this node's L2 subnet") {
				t.Errorf("reason %q", p.Reason)
			}
			continue
		}
		if len(p.Routes) != 1 || p.Routes[0].Via.String() != c.via || p.Routes[0].OverVXLAN != c.vxlan ||
			p.Routes[0].Dst.String() != c.peer.PodCIDRs[0].String() {
			t.Errorf("%s → %s: routes %+v", c.backend, c.peer.Name, p.Routes)
		}
		if c.vxlan && (p.FDBDst.String() != c.peer.NodeIP.String() || p.VTEPMAC.String() != c.peer.VTEPMAC.String()) {
			t.Errorf("%s → %s: fdb %s %s", c.backend, c.peer.Name, p.FDBDst, p.VTEPMAC)
		}
	}
}

func TestPlanPeerNotReady(t *testing.T) {
	l := Local{Name: "a", NodeIP: net.ParseIP("198.18.1.11"), Underlay: cidr("198.18.1.0/24"), Backend: BackendVXLAN}
	for name, p := range map[string]Peer{
		"no cidr": {Name: "x", NodeIP: net.ParseIP("198.18.1.12")},
		"no ip":   {Name: "x", PodCIDRs: []*net.IPNet{cidr("10.244.9.0/24")}},
		"no vtep": {Name: "x", NodeIP: net.ParseIP("198.18.1.12"), PodCIDRs: []*net.IPNet{cidr("10.244.9.0/24")}},
	} {
		if got := PlanPeer(l, p); got.Mode != ModeNotReady || len(got.Routes) > 0 {
			t.Errorf("%s: %+v", name, got)
		}
	}
}

func TestPeerFromNode(t *testing.T) {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: map[string]string{AnnotationVTEPMAC: "02:11:22:33:44:55", AnnotationVTEPIP: "198.18.1.5"}},
		Spec:       corev1.NodeSpec{PodCIDRs: []string{"10.244.5.0/24"}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "n"}, {Type: corev1.NodeInternalIP, Address: "198.18.1.5"}}},
	}
	p := PeerFromNode(n)
	if p.NodeIP.String() != "198.18.1.5" || len(p.PodCIDRs) != 1 || p.VTEPMAC.String() != "02:11:22:33:44:55" || p.VTEPIP.String() != "198.18.1.5" {
		t.Fatalf("%+v", p)
	}
}

func TestVTEPMACStableAndLocal(t *testing.T) {
	a, b := VTEPMAC("node-1"), VTEPMAC("node-1")
	if a.String() != b.String() || a[0]&0x02 == 0 || a[0]&0x01 != 0 {
		t.Fatalf("%s", a)
	}
	if VTEPMAC("node-2").String() == a.String() {
		t.Fatal("same MAC for two nodes")
	}
	if MTUFor(BackendVXLAN, 1500) != 1450 || MTUFor(BackendHostGW, 1500) != 1500 || MTUFor(BackendAuto, 9000) != 8950 {
		t.Fatal("MTU")
	}
}

func mustIP(s string) net.IP { return net.ParseIP(s) }

// A dual-stack peer: VXLAN routes the IPv6 pod CIDR via the peer's IPv6
// VTEP address over the same (IPv4) tunnel; host-gw via its IPv6 node
// address, and not at all when the node has none.
func TestPlanPeerDualStack(t *testing.T) {
	peer := Peer{Name: "b", NodeIP: net.ParseIP("198.18.1.12"), NodeIP6: net.ParseIP("fd00:198:18:1::12"),
		PodCIDRs: []*net.IPNet{cidr("10.244.2.0/24"), cidr("fd00:10:244:2::/64")}, VTEPMAC: VTEPMAC("b")}
	local := func(b string) Local {
		return Local{Name: "a", NodeIP: net.ParseIP("198.18.1.11"), Underlay: cidr("198.18.1.0/24"), Backend: b}
	}
	routes := func(p PeerPlan) string {
		var out []string
		for _, r := range p.Routes {
			out = append(out, fmt.Sprintf("%s>%s/%v", r.Dst, r.Via, r.OverVXLAN))
		}
		return strings.Join(out, " ")
	}
	p := PlanPeer(local(BackendVXLAN), peer)
	if got := routes(p); got != "10.244.2.0/24>10.244.2.0/true fd00:10:244:2::/64>fd00:10:244:2::/true" || !p.VTEPIP6.Equal(net.ParseIP("fd00:10:244:2::")) {
		t.Errorf("vxlan: %s, VTEP6 %v", got, p.VTEPIP6)
	}
	if got := routes(PlanPeer(local(BackendHostGW), peer)); got != "10.244.2.0/24>198.18.1.12/false fd00:10:244:2::/64>fd00:198:18:1::12/false" {
		t.Errorf("host-gw: %s", got)
	}
	peer.NodeIP6 = nil
	if got := routes(PlanPeer(local(BackendHostGW), peer)); got != "10.244.2.0/24>198.18.1.12/false" {
		t.Errorf("host-gw without an IPv6 node address: %s", got)
	}
	n := &corev1.Node{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "198.18.1.12"}, {Type: corev1.NodeInternalIP, Address: "fd00:198:18:1::12"}}}}
	if got := PeerFromNode(n); !got.NodeIP.Equal(net.ParseIP("198.18.1.12")) || !got.NodeIP6.Equal(net.ParseIP("fd00:198:18:1::12")) {
		t.Errorf("PeerFromNode: %v %v", got.NodeIP, got.NodeIP6)
	}
}

// A Node's podCIDR is written by its kubelet (or anyone who can patch
// Nodes): routes are installed only for pod CIDRs inside the cluster CIDRs
// that overlap none of this node's own networks.
func TestPlanPeerRefusesForeignPodCIDRs(t *testing.T) {
	l := Local{Name: "a", NodeIP: net.ParseIP("198.18.1.11"), Underlay: cidr("198.18.1.0/24"), Backend: BackendAuto,
		ClusterCIDRs: []*net.IPNet{cidr("10.244.0.0/16"), cidr("fd10:244::/56")},
		Reserved:     []*net.IPNet{cidr("10.244.1.0/24"), cidr("10.96.0.0/16")}}
	peer := func(cidrs ...string) Peer {
		p := Peer{Name: "b", NodeIP: net.ParseIP("198.18.1.12"), VTEPMAC: VTEPMAC("b")}
		for _, c := range cidrs {
			p.PodCIDRs = append(p.PodCIDRs, cidr(c))
		}
		return p
	}
	for name, c := range map[string]struct {
		peer Peer
		want Mode
	}{
		"inside":                 {peer("10.244.2.0/24", "fd10:244:0:2::/64"), ModeDirect},
		"outside cluster CIDR":   {peer("10.50.0.0/24"), ModeRefused},
		"wider than the cluster": {peer("10.0.0.0/8"), ModeRefused},
		"default route":          {peer("0.0.0.0/0"), ModeRefused},
		"this node's pod CIDR":   {peer("10.244.1.0/24"), ModeRefused},
		"the underlay":           {peer("198.18.1.0/25"), ModeRefused},
		"IPv6 outside":           {peer("10.244.2.0/24", "2001:db8::/64"), ModeRefused},
	} {
		got := PlanPeer(l, c.peer)
		if got.Mode != c.want {
			t.Errorf("%s: mode %s (%s), want %s", name, got.Mode, got.Reason, c.want)
		}
		if c.want == ModeRefused && (len(got.Routes) > 0 || got.VTEPMAC != nil || got.Reason == "") {
			t.Errorf("%s: refused plan has entries or no reason: %+v", name, got)
		}
	}
	// The underlay is reserved even without cluster CIDRs configured.
	l.ClusterCIDRs = nil
	if got := PlanPeer(l, peer("198.18.1.0/24")); got.Mode != ModeRefused {
		t.Errorf("underlay as podCIDR without cluster CIDRs: %s", got.Mode)
	}
}
