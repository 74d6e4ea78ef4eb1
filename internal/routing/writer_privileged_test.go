package routing

import (
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"weft.dev/weft/internal/testutil"
)

// twoNodes links two throwaway namespaces with a veth (one L2 segment) and
// gives each a node IP and a "pod" address on lo.
func twoNodes(t *testing.T) (ns.NetNS, ns.NetNS) {
	testutil.RequireRoot(t)
	a, b := testutil.NewNetNS(t), testutil.NewNetNS(t)
	nameA, nameB := filepath.Base(a.Path()), filepath.Base(b.Path())
	for _, c := range [][]string{
		{"ip", "-n", nameA, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", nameB},
		{"ip", "-n", nameA, "addr", "add", "198.18.50.1/24", "dev", "eth0"},
		{"ip", "-n", nameB, "addr", "add", "198.18.50.2/24", "dev", "eth0"},
		{"ip", "-n", nameA, "link", "set", "eth0", "up"},
		{"ip", "-n", nameB, "link", "set", "eth0", "up"},
		{"ip", "-n", nameA, "addr", "add", "10.244.1.1/32", "dev", "lo"},
		{"ip", "-n", nameB, "addr", "add", "10.244.2.1/32", "dev", "lo"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	return a, b
}

func ping(t *testing.T, from ns.NetNS, dst string) error {
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(from.Path()), "ping", "-c", "1", "-W", "2", dst).CombinedOutput()
	if err != nil {
		return &pingErr{string(out)}
	}
	return nil
}

type pingErr struct{ out string }

func (p *pingErr) Error() string { return p.out }

type side struct {
	n     ns.NetNS
	local Local
	peer  Peer
	dp    *Netlink
}

func setup(t *testing.T, backend string) (side, side) {
	a, b := twoNodes(t)
	sub := cidr("198.18.50.0/24")
	mk := func(n ns.NetNS, name, ip, podCIDR string, peer Peer) side {
		s := side{n: n, peer: peer, local: Local{Name: name, NodeIP: net.ParseIP(ip), Underlay: sub, Backend: backend}}
		err := n.Do(func(ns.NetNS) error {
			idx, mtu, _, err := Underlay(net.ParseIP(ip))
			if err != nil {
				return err
			}
			s.dp = NewNetlink("weft.vxlan", idx)
			if backend == BackendHostGW {
				return nil
			}
			return s.dp.EnsureVXLAN(VXLANConfig{Name: "weft.vxlan", VNI: 1, Port: 4789, LocalIP: net.ParseIP(ip),
				MTU: mtu - VXLANOverhead, MAC: VTEPMAC(name), VTEPIP: VTEPAddress([]*net.IPNet{cidr(podCIDR)}), Underlay: idx})
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	peerA := Peer{Name: "a", NodeIP: net.ParseIP("198.18.50.1"), PodCIDRs: []*net.IPNet{cidr("10.244.1.0/24")}, VTEPMAC: VTEPMAC("a")}
	peerB := Peer{Name: "b", NodeIP: net.ParseIP("198.18.50.2"), PodCIDRs: []*net.IPNet{cidr("10.244.2.0/24")}, VTEPMAC: VTEPMAC("b")}
	return mk(a, "a", "198.18.50.1", "10.244.1.0/24", peerB), mk(b, "b", "198.18.50.2", "10.244.2.0/24", peerA)
}

func (s side) apply(t *testing.T) PeerPlan {
	p := PlanPeer(s.local, s.peer)
	if err := s.n.Do(func(ns.NetNS) error { return s.dp.ApplyPeer(PeerPlan{}, p) }); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrivilegedBackendsCarryTraffic(t *testing.T) {
	for _, backend := range []string{BackendVXLAN, BackendHostGW} {
		t.Run(backend, func(t *testing.T) {
			a, b := setup(t, backend)
			if err := ping(t, a.n, "10.244.2.1"); err == nil {
				t.Fatal("reachable before any plan was applied")
			}
			pa, pb := a.apply(t), b.apply(t)
			want := ModeVXLAN
			if backend == BackendHostGW {
				want = ModeDirect
			}
			if pa.Mode != want || pb.Mode != want {
				t.Fatalf("modes %s %s", pa.Mode, pb.Mode)
			}
			if err := ping(t, a.n, "10.244.2.1"); err != nil {
				t.Fatalf("a → b pod address: %v", err)
			}
			// Removing the plan removes the path.
			if err := a.n.Do(func(ns.NetNS) error { return a.dp.ApplyPeer(pa, PeerPlan{Peer: "b"}) }); err != nil {
				t.Fatal(err)
			}
			if err := ping(t, a.n, "10.244.2.1"); err == nil {
				t.Fatal("still reachable after the peer was removed")
			}
		})
	}
}

func TestPrivilegedReconcileRepairsAndRemovesStale(t *testing.T) {
	a, b := setup(t, BackendVXLAN)
	pa := a.apply(t)
	b.apply(t)
	err := a.n.Do(func(ns.NetNS) error {
		vx, _ := netlink.LinkByName("weft.vxlan")
		idx := vx.Attrs().Index
		// A peer that left while the agent was down.
		stale := PeerPlan{Peer: "gone", Mode: ModeVXLAN, VTEPIP: net.ParseIP("10.244.9.0").To4(), VTEPMAC: VTEPMAC("gone"),
			FDBDst: net.ParseIP("198.18.50.9"), Routes: []Route{{Dst: cidr("10.244.9.0/24"), Via: net.ParseIP("10.244.9.0"), OverVXLAN: true}}}
		if err := a.dp.ApplyPeer(PeerPlan{}, stale); err != nil {
			return err
		}
		// Drift: b's route deleted by hand.
		if err := netlink.RouteDel(&netlink.Route{Dst: cidr("10.244.2.0/24"), LinkIndex: idx, Protocol: RouteProtocol}); err != nil {
			return err
		}
		// A route someone else owns must survive.
		if err := netlink.RouteAdd(&netlink.Route{Dst: cidr("10.99.0.0/24"), Gw: net.ParseIP("198.18.50.2")}); err != nil {
			return err
		}
		changed, err := a.dp.Reconcile([]PeerPlan{pa})
		if err != nil {
			return err
		}
		if changed < 3 {
			t.Errorf("reconcile changed %d entries, want ≥3 (stale route, fdb, neighbour; restored route)", changed)
		}
		routes, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
		var dsts []string
		for _, r := range routes {
			if r.Dst != nil {
				dsts = append(dsts, r.Dst.String())
			}
		}
		all := strings.Join(dsts, " ")
		if strings.Contains(all, "10.244.9.0/24") || !strings.Contains(all, "10.244.2.0/24") || !strings.Contains(all, "10.99.0.0/24") {
			t.Errorf("routes after reconcile: %s", all)
		}
		fdb, _ := netlink.NeighList(idx, 7 /* AF_BRIDGE */)
		for _, e := range fdb {
			if e.HardwareAddr.String() == VTEPMAC("gone").String() {
				t.Errorf("stale FDB entry survived: %v", e)
			}
		}
		// A second reconcile finds nothing to do and writes nothing.
		before := a.dp.Writes()
		again, err := a.dp.Reconcile([]PeerPlan{pa})
		if err == nil && again != 0 {
			t.Errorf("second reconcile changed %d entries", again)
		}
		if w := a.dp.Writes() - before; w != 0 {
			t.Errorf("an idle reconcile made %d netlink writes", w)
		}
		if err != nil {
			return err
		}
		// One peer that cannot be programmed (its gateway is on no link)
		// does not stop the repair of the others.
		if err := netlink.RouteDel(&netlink.Route{Dst: cidr("10.244.2.0/24"), LinkIndex: idx, Protocol: RouteProtocol}); err != nil {
			return err
		}
		bad := PeerPlan{Peer: "bad", Mode: ModeDirect, Routes: []Route{{Dst: cidr("10.244.8.0/24"), Via: net.ParseIP("203.0.113.99")}}}
		if _, err := a.dp.Reconcile([]PeerPlan{bad, pa}); err == nil || !strings.Contains(err.Error(), "peer bad") {
			t.Errorf("reconcile with a failing peer: %v, want its error", err)
		}
		routes, _ = netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		restored := false
		for _, r := range routes {
			restored = restored || (r.Dst != nil && r.Dst.String() == "10.244.2.0/24")
		}
		if !restored {
			t.Error("a failing peer stopped the repair of another")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := ping(t, a.n, "10.244.2.1"); err != nil {
		t.Fatalf("after repair: %v", err)
	}
}

func TestPrivilegedEnsureVXLANIsIdempotent(t *testing.T) {
	a, _ := setup(t, BackendVXLAN)
	err := a.n.Do(func(ns.NetNS) error {
		before, _ := netlink.LinkByName("weft.vxlan")
		idx, mtu, _, _ := Underlay(net.ParseIP("198.18.50.1"))
		cfg := VXLANConfig{Name: "weft.vxlan", VNI: 1, Port: 4789, LocalIP: net.ParseIP("198.18.50.1"), MTU: mtu - VXLANOverhead,
			MAC: VTEPMAC("a"), VTEPIP: net.ParseIP("10.244.1.0").To4(), Underlay: idx}
		if err := a.dp.EnsureVXLAN(cfg); err != nil {
			return err
		}
		after, _ := netlink.LinkByName("weft.vxlan")
		if before.Attrs().Index != after.Attrs().Index {
			t.Errorf("device recreated (index %d → %d): a restart would disturb traffic", before.Attrs().Index, after.Attrs().Index)
		}
		// A different VNI must replace it.
		cfg.VNI = 2
		if err := a.dp.EnsureVXLAN(cfg); err != nil {
			return err
		}
		l, _ := netlink.LinkByName("weft.vxlan")
		if l.(*netlink.Vxlan).VxlanId != 2 {
			t.Errorf("VNI not updated")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Dual-stack: each node also has an IPv6 pod CIDR (a "pod" address on lo).
// VXLAN carries IPv6 pods over the IPv4 underlay (an IPv6 VTEP address and
// neighbour entry per peer); host-gw routes the IPv6 pod CIDR via the
// peer's IPv6 node address. Removing the plan removes both paths.
func TestPrivilegedDualStackBackends(t *testing.T) {
	for _, backend := range []string{BackendVXLAN, BackendHostGW} {
		t.Run(backend, func(t *testing.T) {
			a, b := setup(t, backend)
			for i, s := range []*side{&a, &b} {
				name := filepath.Base(s.n.Path())
				n := i + 1
				for _, c := range [][]string{
					{"ip", "-n", name, "addr", "add", "fd00:198:18:50::" + string(rune('0'+n)) + "/64", "dev", "eth0", "nodad"},
					{"ip", "-n", name, "addr", "add", "fd00:10:244:" + string(rune('0'+n)) + "::1/128", "dev", "lo"},
				} {
					if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
						t.Fatalf("%v: %v %s", c, err, out)
					}
				}
			}
			a.peer.PodCIDRs = append(a.peer.PodCIDRs, cidr("fd00:10:244:2::/64"))
			a.peer.NodeIP6 = net.ParseIP("fd00:198:18:50::2")
			b.peer.PodCIDRs = append(b.peer.PodCIDRs, cidr("fd00:10:244:1::/64"))
			b.peer.NodeIP6 = net.ParseIP("fd00:198:18:50::1")
			if backend == BackendVXLAN {
				// The devices again, now with the IPv6 VTEP address.
				for _, s := range []side{a, b} {
					own := append([]*net.IPNet{}, b.peer.PodCIDRs...)
					if s.local.Name == "b" {
						own = append([]*net.IPNet{}, a.peer.PodCIDRs...)
					}
					err := s.n.Do(func(ns.NetNS) error {
						idx, mtu, _, err := Underlay(s.local.NodeIP)
						if err != nil {
							return err
						}
						return s.dp.EnsureVXLAN(VXLANConfig{Name: "weft.vxlan", VNI: 1, Port: 4789, LocalIP: s.local.NodeIP,
							MTU: mtu - VXLANOverhead, MAC: VTEPMAC(s.local.Name), VTEPIP: VTEPAddress(own), VTEPIP6: VTEPAddress6(own), Underlay: idx})
					})
					if err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := ping(t, a.n, "fd00:10:244:2::1"); err == nil {
				t.Fatal("IPv6 pod address reachable before any plan was applied")
			}
			pa, _ := a.apply(t), b.apply(t)
			if backend == BackendVXLAN && !pa.VTEPIP6.Equal(net.ParseIP("fd00:10:244:2::")) {
				t.Fatalf("IPv6 VTEP of b: %v", pa.VTEPIP6)
			}
			for _, dst := range []string{"10.244.2.1", "fd00:10:244:2::1"} {
				if err := ping(t, a.n, dst); err != nil {
					t.Fatalf("a → b pod address %s: %v", dst, err)
				}
			}
			if err := a.n.Do(func(ns.NetNS) error { return a.dp.ApplyPeer(pa, PeerPlan{Peer: "b"}) }); err != nil {
				t.Fatal(err)
			}
			if err := ping(t, a.n, "fd00:10:244:2::1"); err == nil {
				t.Fatal("IPv6 pod address still reachable after the peer was removed")
			}
			if backend == BackendVXLAN {
				out, _ := exec.Command("ip", "-n", filepath.Base(a.n.Path()), "-6", "neigh", "show", "dev", "weft.vxlan").CombinedOutput()
				if strings.Contains(string(out), "fd00:10:244:2::") {
					t.Fatalf("IPv6 VTEP neighbour left behind:\n%s", out)
				}
			}
		})
	}
}
