package main

import (
	"fmt"
	"os/exec"
	"strings"
)

// bare is the pod network without weft: the lab's underlay shape (rack
// bridges in a router namespace, the router's rack addresses on veths
// plugged into them, GRO as the lab sets it) with three "nodes" and one
// routed-veth "pod" each, joined by a plain kernel VXLAN device with
// static FDB and neighbour entries, or for host-gw by plain routes via the
// peer node. No nftables, no conntrack, no agent.
// weft's ratio divided by bare's, round by round, is what weft's own
// datapath costs beyond the kernel device on the same path.
//
// Namespaces are weft-bx-* (removed by remove, and by `weft lab up` when a
// crashed run left them); addresses 198.18.251-252.0/24 (underlay) and
// 10.251.N.0/24 (pods) exist only inside them.
type bare struct {
	hostGW bool // routes via peer nodes (same rack only), MTU 1500
	// routed: native routing as with BGP: nodes route other racks' pods
	// to their rack router, which has a route to each pod CIDR via its
	// node; MTU 1500.
	routed bool
}

var bareNamespaces = []string{"weft-bx-router", "weft-bx-n1", "weft-bx-n2", "weft-bx-n3", "weft-bx-p1", "weft-bx-p2", "weft-bx-p3"}

// bareNode i (1..3): nodes 1 and 2 in rack a, node 3 in rack b.
func bareNodeIP(i int) string {
	if i == 3 {
		return "198.18.252.13"
	}
	return fmt.Sprintf("198.18.251.1%d", i)
}

func barePodIP(i int) string { return fmt.Sprintf("10.251.%d.2", i) }

func (bare) remove() {
	for _, n := range bareNamespaces {
		_ = exec.Command("ip", "netns", "del", n).Run()
	}
}

func (b bare) up() error {
	b.remove()
	var cmds [][]string
	add := func(argv ...string) { cmds = append(cmds, argv) }
	for _, n := range bareNamespaces {
		add("ip", "netns", "add", n)
		add("ip", "-n", n, "link", "set", "lo", "up")
	}
	r := "weft-bx-router"
	add("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	for rack, gw := range map[string]string{"a": "198.18.251.1/24", "b": "198.18.252.1/24"} {
		add("ip", "-n", r, "link", "add", "bx-rack-"+rack, "type", "bridge")
		add("ip", "-n", r, "link", "set", "bx-rack-"+rack, "up")
		add("ip", "-n", r, "link", "add", "bx-gw-"+rack, "type", "veth", "peer", "name", "bx-gwp-"+rack)
		add("ip", "-n", r, "link", "set", "bx-gwp-"+rack, "master", "bx-rack-"+rack)
		add("ip", "-n", r, "addr", "add", gw, "dev", "bx-gw-"+rack)
		for _, l := range []string{"bx-gw-" + rack, "bx-gwp-" + rack} {
			add("ip", "-n", r, "link", "set", l, "up")
			add("ip", "netns", "exec", r, "ethtool", "-K", l, "gro", "on", "rx-udp-gro-forwarding", "on")
		}
	}
	for i := 1; i <= 3; i++ {
		node, pod, port := fmt.Sprintf("weft-bx-n%d", i), fmt.Sprintf("weft-bx-p%d", i), fmt.Sprintf("bx-p%d", i)
		rack, gw := "a", "198.18.251.1"
		if i == 3 {
			rack, gw = "b", "198.18.252.1"
		}
		add("ip", "link", "add", port, "netns", r, "type", "veth", "peer", "name", "eth0", "netns", node)
		add("ip", "-n", r, "link", "set", port, "master", "bx-rack-"+rack)
		add("ip", "-n", r, "link", "set", port, "up")
		add("ip", "netns", "exec", r, "ethtool", "-K", port, "gro", "on", "rx-udp-gro-forwarding", "on")
		add("ip", "-n", node, "addr", "add", bareNodeIP(i)+"/24", "dev", "eth0")
		add("ip", "-n", node, "link", "set", "eth0", "up")
		add("ip", "netns", "exec", node, "ethtool", "-K", "eth0", "gro", "on", "rx-udp-gro-forwarding", "on")
		add("ip", "-n", node, "route", "add", "default", "via", gw)
		add("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		// The pod: a routed veth with a link-local gateway, as weft-cni.
		mtu := "1450"
		if b.hostGW || b.routed {
			mtu = "1500"
		}
		add("ip", "link", "add", fmt.Sprintf("bxveth%d", i), "netns", node, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "netns", pod, "mtu", mtu)
		add("ip", "-n", pod, "addr", "add", barePodIP(i)+"/32", "dev", "eth0")
		add("ip", "-n", pod, "link", "set", "eth0", "up")
		add("ip", "-n", pod, "route", "add", "169.254.1.1", "dev", "eth0")
		add("ip", "-n", pod, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
		add("ip", "-n", node, "link", "set", fmt.Sprintf("bxveth%d", i), "up")
		add("ip", "-n", node, "addr", "add", "169.254.1.1/32", "dev", fmt.Sprintf("bxveth%d", i))
		add("ip", "-n", node, "route", "add", barePodIP(i)+"/32", "dev", fmt.Sprintf("bxveth%d", i))
		add("ip", "-n", node, "link", "add", "vx", "type", "vxlan", "id", "1", "local", bareNodeIP(i), "dev", "eth0", "dstport", "4789", "nolearning")
		add("ip", "-n", node, "link", "set", "vx", "address", fmt.Sprintf("02:00:00:00:00:0%d", i))
		add("ip", "-n", node, "addr", "add", fmt.Sprintf("10.251.%d.0/32", i), "dev", "vx")
		add("ip", "-n", node, "link", "set", "vx", "up")
	}
	for i := 1; i <= 3; i++ {
		node := fmt.Sprintf("weft-bx-n%d", i)
		for p := 1; p <= 3; p++ {
			if p == i {
				continue
			}
			if b.hostGW || b.routed {
				if (i == 3) == (p == 3) { // same rack: on-link
					add("ip", "-n", node, "route", "add", fmt.Sprintf("10.251.%d.0/24", p), "via", bareNodeIP(p))
				}
				continue
			}
			mac := fmt.Sprintf("02:00:00:00:00:0%d", p)
			add("ip", "-n", node, "neigh", "add", fmt.Sprintf("10.251.%d.0", p), "lladdr", mac, "dev", "vx", "nud", "permanent")
			add("bridge", "-n", node, "fdb", "add", mac, "dev", "vx", "dst", bareNodeIP(p))
			add("ip", "-n", node, "route", "add", fmt.Sprintf("10.251.%d.0/24", p), "via", fmt.Sprintf("10.251.%d.0", p), "dev", "vx", "onlink")
		}
	}
	if b.routed {
		for p := 1; p <= 3; p++ {
			add("ip", "-n", r, "route", "add", fmt.Sprintf("10.251.%d.0/24", p), "via", bareNodeIP(p))
		}
	}
	for _, c := range cmds {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			b.remove()
			return fmt.Errorf("bare set-up: %s: %v %s", strings.Join(c, " "), err, out)
		}
	}
	return nil
}

// conntrackTable is what every conntrack-based datapath carries (kube-proxy,
// Flannel's masquerade, Calico's iptables mode): connection tracking, a
// filter on the forward hook, and NAT hooks that see each connection's
// first packet. Loaded into the bare nodes it gives the floor such a
// datapath cannot go below; weft's own rules are what it costs above it.
const conntrackTable = `table inet weft-bx-ct {
	chain forward { type filter hook forward priority filter; policy accept; ct state invalid drop; }
	chain prerouting { type nat hook prerouting priority dstnat; policy accept; }
	chain postrouting { type nat hook postrouting priority srcnat; policy accept; }
}
`

// conntrack loads (on) or removes the conntrack table in the bare nodes.
func (bare) conntrack(on bool) error {
	for i := 1; i <= 3; i++ {
		node := fmt.Sprintf("weft-bx-n%d", i)
		cmd := exec.Command("ip", "netns", "exec", node, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(conntrackTable)
		if !on {
			cmd = exec.Command("ip", "netns", "exec", node, "nft", "delete", "table", "inet", "weft-bx-ct")
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("bare conntrack table in %s: %v %s", node, err, out)
		}
	}
	return nil
}
