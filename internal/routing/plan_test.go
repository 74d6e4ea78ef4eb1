package routing

import (
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
