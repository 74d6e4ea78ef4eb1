package lab

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
)

// Addressing of the lab (see docs/lab.md). The underlay is the benchmarking
// range 198.18.0.0/15; the "outside world" is TEST-NET-3.
const (
	HostLink       = "weft-host"    // host end of the control-plane p2p link
	HostLinkIP     = "198.19.255.1" // host side
	CPLinkIP       = "198.19.255.2" // control-plane side; the host's API endpoint
	HostLinkPrefix = 30
	OutsideIP      = "203.0.113.10"
	RouterOutIP    = "203.0.113.1"
	ClusterCIDR    = "10.244.0.0/16"
	ServiceCIDR    = "10.96.0.0/16"
	KubernetesSvc  = "10.96.0.1"
	ClusterDNS     = "10.96.0.10"
	ClusterDomain  = "cluster.local"
	RouterNS       = "weft-router"
	OutsideNS      = "weft-outside"
	ControlPlane   = "weft-control-plane"
	APIPort        = 6443
	UnderlayCIDR   = "198.18.0.0/15"
	// LBPool gives LoadBalancer services addresses (weft lb-ipam). Nothing
	// routes it yet: reachable from nodes and pods through the proxy;
	// announcing it to the router comes with BGP.
	LBPool = "198.19.100.0/24"

	// Dual-stack labs (`weft lab up --dual-stack`) add IPv6 (ULA ranges):
	// node fd00:198:18:<rack>::<host>, pods, services.
	ClusterCIDR6  = "fd00:10:244::/56"
	ServiceCIDR6  = "fd00:10:96::/112"
	UnderlayCIDR6 = "fd00:198:18::/48"
)

// Node is one lab node: a network namespace on a rack's L2 segment.
type Node struct {
	Name         string
	Rack         int // 0-based
	IP           net.IP
	IP6          net.IP `json:"ip6,omitempty"` // dual-stack labs only
	ControlPlane bool
}

// RackGateway6 is the router's IPv6 address on rack r.
func RackGateway6(r int) net.IP { return net.ParseIP(fmt.Sprintf("fd00:198:18:%d::1", r+1)) }

// AddIPv6 gives each node its IPv6 underlay address (dual-stack labs):
// the IPv4 address's rack and host numbers in fd00:198:18::/48.
func AddIPv6(nodes []Node) {
	for i := range nodes {
		nodes[i].IP6 = net.ParseIP(fmt.Sprintf("fd00:198:18:%d::%d", nodes[i].Rack+1, nodes[i].IP.To4()[3]))
	}
}

// RackName is the bridge (in the router namespace) of rack r.
func RackName(r int) string { return fmt.Sprintf("weft-rack-%c", 'a'+r) }

// rackGatewayLink holds the router's address on rack r; its veth peer
// (rackGatewayPort) is a port of the rack bridge.
func rackGatewayLink(r int) string { return fmt.Sprintf("weft-gw-%c", 'a'+r) }
func rackGatewayPort(r int) string { return fmt.Sprintf("weft-gwp-%c", 'a'+r) }

// RackGateway is the router's address on rack r.
func RackGateway(r int) net.IP { return net.IPv4(198, 18, byte(r+1), 1).To4() }

// Plan lays out the nodes: the control plane first in rack a, then the
// workers filling racks in order (DESIGN.md: node-1, node-2 in rack a,
// node-3 in rack b for 3 nodes and 2 racks).
func Plan(workers, racks int) []Node {
	if racks < 1 {
		racks = 1
	}
	nodes := []Node{{Name: ControlPlane, Rack: 0, IP: net.IPv4(198, 18, 1, 10).To4(), ControlPlane: true}}
	perRack := (workers + racks - 1) / racks
	if perRack == 0 {
		perRack = 1
	}
	for i := 1; i <= workers; i++ {
		r := (i - 1) / perRack
		if r >= racks {
			r = racks - 1
		}
		nodes = append(nodes, Node{Name: fmt.Sprintf("weft-node-%d", i), Rack: r, IP: net.IPv4(198, 18, byte(r+1), byte(10+i)).To4()})
	}
	return nodes
}

// APIServerIP is where nodes reach the API server.
func APIServerIP() net.IP { return net.IPv4(198, 18, 1, 10).To4() }

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func runAll(cmds [][]string) error {
	for _, c := range cmds {
		if err := run(c...); err != nil {
			return err
		}
	}
	return nil
}

func sysctl(ns, key, val string) []string {
	return []string{"ip", "netns", "exec", ns, "sysctl", "-qw", key + "=" + val}
}

// buildTopology creates namespaces, bridges and links. Nothing in it has
// a route towards a real interface: the router has no default route, and
// the only link to the host is the /30 to the control-plane namespace,
// guarded by an nftables table that drops forwarding to or from it.
func buildTopology(nodes []Node, racks int, dual bool) error {
	cmds := [][]string{
		{"ip", "netns", "add", RouterNS},
		{"ip", "-n", RouterNS, "link", "set", "lo", "up"},
		sysctl(RouterNS, "net.ipv4.ip_forward", "1"),
		{"ip", "netns", "add", OutsideNS},
		{"ip", "-n", OutsideNS, "link", "set", "lo", "up"},
		{"ip", "link", "add", "weft-outside0", "netns", RouterNS, "type", "veth", "peer", "name", "eth0", "netns", OutsideNS},
		{"ip", "-n", RouterNS, "addr", "add", RouterOutIP + "/24", "dev", "weft-outside0"},
		{"ip", "-n", RouterNS, "link", "set", "weft-outside0", "up"},
		{"ip", "-n", OutsideNS, "addr", "add", OutsideIP + "/24", "dev", "eth0"},
		{"ip", "-n", OutsideNS, "link", "set", "eth0", "up"},
		{"ip", "-n", OutsideNS, "route", "add", UnderlayCIDR, "via", RouterOutIP},
	}
	// The router's address on a rack is not on the bridge itself but on a
	// veth plugged into it, like a router port cabled to a switch: a
	// bridge device has no encapsulation offloads (hw_enc_features), so
	// every VXLAN super-packet routed out through one was segmented in
	// software, halving cross-rack VXLAN throughput (0.46 of the same
	// path without the bridge, 0.90 with the veth in a standalone test).
	for r := 0; r < racks; r++ {
		br, gw, gwp := RackName(r), rackGatewayLink(r), rackGatewayPort(r)
		cmds = append(cmds,
			[]string{"ip", "-n", RouterNS, "link", "add", br, "type", "bridge"},
			[]string{"ip", "-n", RouterNS, "link", "set", br, "up"},
			[]string{"ip", "-n", RouterNS, "link", "add", gw, "type", "veth", "peer", "name", gwp},
			[]string{"ip", "-n", RouterNS, "link", "set", gwp, "master", br},
			[]string{"ip", "-n", RouterNS, "link", "set", gwp, "up"},
			[]string{"ip", "-n", RouterNS, "addr", "add", RackGateway(r).String() + "/24", "dev", gw},
			[]string{"ip", "-n", RouterNS, "link", "set", gw, "up"},
		)
	}
	if dual {
		// No duplicate address detection anywhere: addresses are planned,
		// and DAD would hold each for a second or more.
		cmds = append(cmds, sysctl(RouterNS, "net.ipv6.conf.all.forwarding", "1"))
		for r := 0; r < racks; r++ {
			cmds = append(cmds, []string{"ip", "-n", RouterNS, "addr", "add", RackGateway6(r).String() + "/64", "dev", rackGatewayLink(r), "nodad"})
		}
	}
	for i, n := range nodes {
		port := fmt.Sprintf("weft-p%d", i)
		cmds = append(cmds,
			[]string{"ip", "netns", "add", n.Name},
			[]string{"ip", "-n", n.Name, "link", "set", "lo", "up"})
		if n.IP6 != nil {
			// Before any link exists: pod veths too get no DAD.
			cmds = append(cmds,
				sysctl(n.Name, "net.ipv6.conf.default.accept_dad", "0"),
				sysctl(n.Name, "net.ipv6.conf.all.accept_dad", "0"))
		}
		cmds = append(cmds,
			[]string{"ip", "link", "add", port, "netns", RouterNS, "type", "veth", "peer", "name", "eth0", "netns", n.Name},
			[]string{"ip", "-n", RouterNS, "link", "set", port, "master", RackName(n.Rack)},
			[]string{"ip", "-n", RouterNS, "link", "set", port, "up"},
			[]string{"ip", "-n", n.Name, "addr", "add", n.IP.String() + "/24", "dev", "eth0"},
			[]string{"ip", "-n", n.Name, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", n.Name, "route", "add", "default", "via", RackGateway(n.Rack).String()},
		)
		if n.IP6 != nil {
			cmds = append(cmds,
				[]string{"ip", "-n", n.Name, "addr", "add", n.IP6.String() + "/64", "dev", "eth0", "nodad"},
				[]string{"ip", "-n", n.Name, "-6", "route", "add", "default", "via", RackGateway6(n.Rack).String()})
		}
	}
	// Host ↔ control plane: a point-to-point link for the API server only.
	cmds = append(cmds,
		[]string{"ip", "link", "add", HostLink, "type", "veth", "peer", "name", "host0", "netns", ControlPlane},
		[]string{"ip", "addr", "add", fmt.Sprintf("%s/%d", HostLinkIP, HostLinkPrefix), "dev", HostLink},
		[]string{"ip", "link", "set", HostLink, "up"},
		[]string{"sysctl", "-qw", "net.ipv4.conf." + HostLink + ".rp_filter=1"},
		[]string{"sysctl", "-qw", "net.ipv4.conf." + HostLink + ".forwarding=0"},
		[]string{"ip", "-n", ControlPlane, "addr", "add", fmt.Sprintf("%s/%d", CPLinkIP, HostLinkPrefix), "dev", "host0"},
		[]string{"ip", "-n", ControlPlane, "link", "set", "host0", "up"},
	)
	if err := runAll(cmds); err != nil {
		return err
	}
	// Real NICs do GRO; veths only when asked. Without it every VXLAN
	// packet is processed on its own at the receiver and the lab would
	// measure veth quirks rather than the pod network. Applied to the
	// underlay alike for node and pod traffic.
	var gro [][]string
	for r := 0; r < racks; r++ {
		for _, l := range []string{rackGatewayLink(r), rackGatewayPort(r)} {
			gro = append(gro, []string{"ip", "netns", "exec", RouterNS, "ethtool", "-K", l, "gro", "on", "rx-udp-gro-forwarding", "on"})
		}
	}
	for i, n := range nodes {
		gro = append(gro,
			[]string{"ip", "netns", "exec", n.Name, "ethtool", "-K", "eth0", "gro", "on", "rx-udp-gro-forwarding", "on"},
			[]string{"ip", "netns", "exec", RouterNS, "ethtool", "-K", fmt.Sprintf("weft-p%d", i), "gro", "on", "rx-udp-gro-forwarding", "on"})
	}
	if err := runAll(gro); err != nil {
		return fmt.Errorf("enable GRO on the lab underlay: %w", err)
	}
	guard := `table inet weft-lab-guard {
	chain forward {
		type filter hook forward priority -200; policy accept;
		iifname "host0" drop
		oifname "host0" drop
	}
}
`
	cmd := exec.Command("ip", "netns", "exec", ControlPlane, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(guard)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("guard table: %v: %s", err, out)
	}
	return nil
}
