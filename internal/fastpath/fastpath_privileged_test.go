package fastpath

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"weft.dev/weft/internal/testutil"
)

// fpNode is a node of the test: its namespace, fast path and pod.
type fpNode struct {
	ns    ns.NetNS
	pod   ns.NetNS
	ctl   *Controller
	podA  string // the pod's address
	podA6 string // its IPv6 address
}

func sh(t *testing.T, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if out, err := exec.Command("sh", "-c", c).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", c, err, out)
		}
	}
}

// conntrackTable is what the kernel's path of a weft node carries: a
// forward filter dropping what conntrack calls invalid (as weft's service
// proxy does), with a counter of the pod TCP packets that reach it, a
// policy's shape (replies pass, the rest is judged: here, addresses in
// @denied take nothing new), and a Service-like DNAT.
const conntrackTable = `table inet weft-fpt {
	set denied { type ipv4_addr; }
	chain forward { type filter hook forward priority filter; ct state invalid drop; ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 meta l4proto tcp counter; ct direction reply accept; ip daddr @denied drop; }
	chain forward6 { type filter hook forward priority filter + 1; ip6 saddr fd44::/16 ip6 daddr fd44::/16 meta l4proto tcp counter; }
	chain prerouting { type nat hook prerouting priority dstnat; ip daddr 10.96.0.10 tcp dport 80 dnat to 10.244.2.5:8080; ip daddr 10.96.0.10 udp dport 80 dnat to 10.244.2.5:8080; ip6 daddr fd96::10 meta l4proto { tcp, udp } th dport 80 dnat ip6 to [fd44:2::5]:8080; }
	chain postrouting { type nat hook postrouting priority srcnat; }
	chain output { type filter hook output priority filter; udp dport 4789 counter; }
	chain input { type filter hook input priority filter; udp dport 4789 counter; }
}
`

// newFastPathNodes builds two routed nodes (host-gw: pod CIDRs via the
// other node, or with vxlan through a VXLAN device set up as weft's
// agent does), a pod each, and the fast path on both.
func newFastPathNodes(t *testing.T, spare, vxlan bool) [2]*fpNode {
	var nodes [2]*fpNode
	n1, n2 := testutil.NewNetNS(t), testutil.NewNetNS(t)
	a, b := filepath.Base(n1.Path()), filepath.Base(n2.Path())
	sh(t, fmt.Sprintf("ip -n %s link add eth9 type veth peer name eth9 netns %s", a, b))
	for i, n := range []ns.NetNS{n1, n2} {
		name, other := filepath.Base(n.Path()), 2-i
		pod := testutil.NewNetNS(t)
		p := filepath.Base(pod.Path())
		nodes[i] = &fpNode{ns: n, pod: pod, podA: fmt.Sprintf("10.244.%d.5", i+1), podA6: fmt.Sprintf("fd44:%d::5", i+1)}
		sh(t,
			fmt.Sprintf("ip netns exec %s sysctl -qw net.ipv4.ip_forward=1", name),
			fmt.Sprintf("ip netns exec %s sysctl -qw net.ipv6.conf.all.forwarding=1", name),
			fmt.Sprintf("ip netns exec %s sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.eth9.accept_dad=0", name),
			fmt.Sprintf("ip netns exec %s sysctl -qw net.ipv6.conf.default.accept_dad=0", p),
			fmt.Sprintf("ip -n %s link set lo up", name),
			fmt.Sprintf("ip -n %s addr add 198.18.9.%d/24 dev eth9", name, i+1),
			fmt.Sprintf("ip -n %s link set eth9 up", name),
			fmt.Sprintf("ip -n %s link add weftpod type veth peer name eth0 netns %s", name, p),
			fmt.Sprintf("ip -n %s addr add 10.244.%d.1/32 dev weftpod", name, i+1),
			fmt.Sprintf("ip -n %s link set weftpod up", name),
			fmt.Sprintf("ip -n %s route add %s/32 dev weftpod", name, nodes[i].podA),
			fmt.Sprintf("ip -n %s link set lo up", p),
			fmt.Sprintf("ip -n %s addr add %s/32 dev eth0", p, nodes[i].podA),
			fmt.Sprintf("ip -n %s link set eth0 up", p),
			fmt.Sprintf("ip -n %s route add 10.244.%d.1 dev eth0", p, i+1),
			fmt.Sprintf("ip -n %s route add default via 10.244.%d.1 dev eth0", p, i+1),
			// IPv6 beside it: the same shape.
			fmt.Sprintf("ip -n %s addr add fd98::%d/64 dev eth9 nodad", name, i+1),
			fmt.Sprintf("ip -n %s addr add fd44:%d::1/128 dev weftpod nodad", name, i+1),
			fmt.Sprintf("ip -n %s route add %s/128 dev weftpod", name, nodes[i].podA6),
			fmt.Sprintf("ip -n %s addr add %s/128 dev eth0 nodad", p, nodes[i].podA6),
			fmt.Sprintf("ip -n %s route add fd44:%d::1 dev eth0", p, i+1),
			fmt.Sprintf("ip -n %s route add default via fd44:%d::1 dev eth0", p, i+1),
		)
		if vxlan {
			sh(t, vxlanNode(name, i+1, other)...)
			sh(t, fmt.Sprintf("ip -n %s link set eth0 mtu 1450", p))
		} else {
			sh(t, fmt.Sprintf("ip -n %s route add 10.244.%d.0/24 via 198.18.9.%d", name, other, other),
				fmt.Sprintf("ip -n %s route add fd44:%d::/64 via fd98::%d", name, other, other))
		}
		cmd := exec.Command("ip", "netns", "exec", name, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(conntrackTable)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft: %v %s", err, out)
		}
		if err := n.Do(func(ns.NetNS) error {
			d, err := Load([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd44::/16")}, spare)
			if err != nil {
				return err
			}
			eth9, err := net.InterfaceByName("eth9")
			if err != nil {
				return err
			}
			nodes[i].ctl = New(Config{Datapath: d, PodPrefix: "weftpod", Underlay: eth9.Index, Policy: true,
				Uplinks: []string{"weft.vxlan"}, Tunnel: "weft.vxlan",
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nodes[i].ctl.cfg.Datapath.Close)
	}
	return nodes
}

// vxlanNode gives node `self` (1 or 2) the VXLAN device as the agent sets
// it up: its VTEP address, and the peer's MAC, forwarding entry and pod
// route onlink via the peer's VTEP address.
func vxlanNode(name string, self, peer int) []string {
	return []string{
		fmt.Sprintf("ip -n %s link add weft.vxlan address 02:00:00:00:00:0%d type vxlan id 1 local 198.18.9.%d dev eth9 dstport 4789 nolearning", name, self, self),
		fmt.Sprintf("ip -n %s link set weft.vxlan mtu 1450 up", name),
		fmt.Sprintf("ip -n %s addr add 10.244.%d.0/32 dev weft.vxlan", name, self),
		fmt.Sprintf("bridge -n %s fdb append 02:00:00:00:00:0%d dev weft.vxlan dst 198.18.9.%d self permanent", name, peer, peer),
		fmt.Sprintf("ip -n %s neigh replace 10.244.%d.0 lladdr 02:00:00:00:00:0%d dev weft.vxlan nud permanent", name, peer, peer),
		fmt.Sprintf("ip -n %s route add 10.244.%d.0/24 via 10.244.%d.0 dev weft.vxlan onlink", name, peer, peer),
	}
}

// judge reports the node's pod to its controller as judged or not, and
// syncs the maps.
func (n *fpNode) judge(t *testing.T, judged bool) {
	t.Helper()
	n.ctl.SetJudged(map[netip.Addr]Judged{netip.MustParseAddr(n.podA): {Ingress: judged}, netip.MustParseAddr(n.podA6): {Ingress: judged}})
	if err := n.ns.Do(func(ns.NetNS) error { return n.ctl.Sync() }); err != nil {
		t.Fatal(err)
	}
}

// exchange connects from pod `from` to addr, sends a line and reads it back.
func exchange(t *testing.T, from *fpNode, to *fpNode, addr string) error {
	t.Helper()
	var l net.Listener
	if err := to.pod.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", ":8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := l.Accept()
		if err == nil {
			_, _ = io.Copy(c, c)
			c.Close()
		}
	}()
	// Both ends closed before the next step, so no packet of this flow
	// is counted there.
	defer func() {
		l.Close()
		<-served
		time.Sleep(50 * time.Millisecond)
	}()
	return from.pod.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		msg := strings.Repeat("x", 100000) + "\n"
		go func() { _, _ = io.WriteString(c, msg) }()
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			return fmt.Errorf("reading the echo: %w", err)
		}
		return nil
	})
}

func (n *fpNode) stats(t *testing.T) [nstats]uint64 {
	t.Helper()
	s, err := n.ctl.cfg.Datapath.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// forwarded is the kernel forward hook's count of pod packets on a node.
func (n *fpNode) forwarded(t *testing.T) string { return n.counted(t, "forward") }

// counted is a chain's counter of the test table.
func (n *fpNode) counted(t *testing.T, chain string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(n.ns.Path()), "nft", "list", "chain", "inet", "weft-fpt", chain).CombinedOutput()
	if err != nil {
		t.Fatalf("%v %s", err, out)
	}
	_, after, _ := strings.Cut(string(out), "counter packets ")
	packets, _, _ := strings.Cut(after, " ")
	return packets
}

// Pod-to-pod TCP between open pods skips both nodes' forward hooks; a
// Service's DNAT (conntrack knows the flow) keeps the kernel's path, so
// replies are un-NATed; a pod a policy selects takes the kernel's path in
// both directions, so its own outgoing connections still work under
// "ct state invalid drop"; a spoofed source is left to the kernel.
func TestPrivilegedFastPath(t *testing.T) {
	testutil.RequireRoot(t)
	n := newFastPathNodes(t, false, false)
	for _, node := range n {
		node.judge(t, false)
	}
	// The nodes know each other's MAC addresses, but not their pods'
	// (a pod that has received nothing yet): the first packets find no
	// neighbour entry at the pod's end and must still stay on the fast
	// path, or conntrack would see the SYN-ACK without its SYN (invalid).
	sh(t, fmt.Sprintf("ip netns exec %s ping -c1 -W1 198.18.9.2", filepath.Base(n[0].ns.Path())))

	if err := exchange(t, n[0], n[1], n[1].podA+":8080"); err != nil {
		t.Fatalf("pod to pod: %v", err)
	}
	if s := n[0].stats(t); s[FwdEgress] == 0 {
		t.Errorf("node 1 forwarded nothing from its pod: %v", s)
	}
	if s := n[1].stats(t); s[FwdIngress] == 0 || s[FwdEgress] == 0 {
		t.Errorf("node 2 forwarded nothing to or from its pod: %v", s)
	}
	for i, node := range n {
		if got := node.forwarded(t); got != "0" {
			t.Errorf("node %d: %s pod packets took the forward hook, want 0", i+1, got)
		}
	}

	if err := exchange(t, n[0], n[1], "10.96.0.10:80"); err != nil {
		t.Fatalf("through the DNAT: %v", err)
	}
	if s := n[0].stats(t); s[PassTracked] == 0 {
		t.Errorf("node 1 did not leave the DNATed flow's replies to conntrack: %v", s)
	}

	n[1].judge(t, true)
	before := n[1].stats(t)
	if err := exchange(t, n[0], n[1], n[1].podA+":8080"); err != nil {
		t.Fatalf("to a judged pod: %v", err)
	}
	if err := exchange(t, n[1], n[0], n[0].podA+":8080"); err != nil {
		t.Fatalf("from a judged pod (ingress policy only): %v", err)
	}
	if s := n[1].stats(t); s[PassJudged] == before[PassJudged] || s[FwdIngress] != before[FwdIngress] || s[FwdEgress] != before[FwdEgress] {
		t.Errorf("node 2 forwarded a judged pod's new flows: before %v, after %v", before, s)
	}
	if got := n[1].forwarded(t); got == "0" {
		t.Errorf("node 2: a judged pod's packets did not take the forward hook")
	}

	before = n[0].stats(t)
	sh(t, fmt.Sprintf("ip -n %s addr add 10.244.1.99/32 dev eth0", filepath.Base(n[0].pod.Path())))
	_ = n[0].pod.Do(func(ns.NetNS) error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("10.244.1.99")}, Timeout: 300 * time.Millisecond}
		if c, err := d.Dial("tcp", n[1].podA+":9"); err == nil {
			c.Close()
		}
		return nil
	})
	if s := n[0].stats(t); s[FwdEgress] != before[FwdEgress] || s[PassOther] == before[PassOther] {
		t.Errorf("node 1 forwarded a packet with a source not its pod's: before %v, after %v", before, s)
	}
}

// IPv6 pod-to-pod TCP takes the fast path as IPv4's does: between open
// pods past both nodes' forward hooks (the first packets resolving the
// next hop through the kernel); a judged pod's new flows take the
// kernel's path.
func TestPrivilegedFastPathIPv6(t *testing.T) {
	testutil.RequireRoot(t)
	n := newFastPathNodes(t, false, false)
	for _, node := range n {
		node.judge(t, false)
	}
	if err := exchange(t, n[0], n[1], "["+n[1].podA6+"]:8080"); err != nil {
		t.Fatalf("pod to pod over IPv6: %v", err)
	}
	if s := n[0].stats(t); s[FwdEgress] == 0 {
		t.Errorf("node 1 forwarded nothing from its pod: %v", s)
	}
	if s := n[1].stats(t); s[FwdIngress] == 0 || s[FwdEgress] == 0 {
		t.Errorf("node 2 forwarded nothing to or from its pod: %v", s)
	}
	for i, node := range n {
		if got := node.counted(t, "forward6"); got != "0" {
			t.Errorf("node %d: %s IPv6 pod packets took the forward hook, want 0", i+1, got)
		}
	}

	n[1].judge(t, true)
	before := n[1].stats(t)
	if err := exchange(t, n[0], n[1], "["+n[1].podA6+"]:8080"); err != nil {
		t.Fatalf("to a judged pod over IPv6: %v", err)
	}
	if s := n[1].stats(t); s[PassJudged] == before[PassJudged] || s[FwdIngress] != before[FwdIngress] {
		t.Errorf("node 2 forwarded a judged pod's new IPv6 flow: before %v, after %v", before, s)
	}
	if got := n[1].counted(t, "forward6"); got == "0" {
		t.Errorf("node 2: a judged pod's IPv6 packets did not take the forward hook")
	}
}

// Two pods on one node: their TCP goes from one pod's veth straight into
// the other pod, past the node's forward hook; when a policy selects
// either pod, their new flows take the kernel's path in both directions.
func TestPrivilegedFastPathSameNode(t *testing.T) {
	testutil.RequireRoot(t)
	n := newFastPathNodes(t, false, false)
	a := n[0]
	c := &fpNode{ns: a.ns, pod: testutil.NewNetNS(t), ctl: a.ctl, podA: "10.244.1.6"}
	name, p := filepath.Base(a.ns.Path()), filepath.Base(c.pod.Path())
	sh(t,
		fmt.Sprintf("ip -n %s link add weftpod2 type veth peer name eth0 netns %s", name, p),
		fmt.Sprintf("ip -n %s addr add 10.244.1.1/32 dev weftpod2", name),
		fmt.Sprintf("ip -n %s link set weftpod2 up", name),
		fmt.Sprintf("ip -n %s route add %s/32 dev weftpod2", name, c.podA),
		fmt.Sprintf("ip -n %s link set lo up", p),
		fmt.Sprintf("ip -n %s addr add %s/32 dev eth0", p, c.podA),
		fmt.Sprintf("ip -n %s link set eth0 up", p),
		fmt.Sprintf("ip -n %s route add 10.244.1.1 dev eth0", p),
		fmt.Sprintf("ip -n %s route add default via 10.244.1.1 dev eth0", p),
	)
	judge := func(cJudged bool) {
		t.Helper()
		a.ctl.SetJudged(map[netip.Addr]Judged{netip.MustParseAddr(a.podA): {}, netip.MustParseAddr(c.podA): {Ingress: cJudged}})
		if err := a.ns.Do(func(ns.NetNS) error { return a.ctl.Sync() }); err != nil {
			t.Fatal(err)
		}
	}
	judge(false)
	if err := exchange(t, a, c, c.podA+":8080"); err != nil {
		t.Fatalf("pod to pod on one node: %v", err)
	}
	if s := a.stats(t); s[FwdLocal] == 0 {
		t.Errorf("the node forwarded nothing between its pods: %v", s)
	}
	if got := a.forwarded(t); got != "0" {
		t.Errorf("%s pod packets took the forward hook, want 0", got)
	}

	judge(true)
	before := a.stats(t)
	if err := exchange(t, a, c, c.podA+":8080"); err != nil {
		t.Fatalf("to a judged pod on the node: %v", err)
	}
	if err := exchange(t, c, a, a.podA+":8080"); err != nil {
		t.Fatalf("from a judged pod to a pod on the node: %v", err)
	}
	if s := a.stats(t); s[FwdLocal] != before[FwdLocal] || s[PassJudged] == before[PassJudged] {
		t.Errorf("the node forwarded a judged pod's new flows: before %v, after %v", before, s)
	}
	if got := a.forwarded(t); got == "0" {
		t.Errorf("a judged pod's packets did not take the forward hook")
	}
}

// A flow begun on the fast path whose pod a policy then selects: by
// default the initiator's next packet is judged on the kernel's path (a
// deny cuts the flow) even when the responder speaks first; with spare
// (--policy-keep-established) the flow lives on.
func TestPrivilegedFastPathNewDenyAndOpenFlows(t *testing.T) {
	testutil.RequireRoot(t)
	for _, spare := range []bool{false, true} {
		t.Run(fmt.Sprintf("spare=%v", spare), func(t *testing.T) {
			n := newFastPathNodes(t, spare, false)
			for _, node := range n {
				node.judge(t, false)
			}
			sh(t, fmt.Sprintf("ip netns exec %s ping -c1 -W1 %s", filepath.Base(n[0].pod.Path()), n[1].podA))
			var l net.Listener
			if err := n[1].pod.Do(func(ns.NetNS) error {
				var err error
				l, err = net.Listen("tcp", n[1].podA+":8080")
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			push := make(chan struct{})
			go func() {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				line := make([]byte, 6)
				if _, err := io.ReadFull(c, line); err != nil {
					return
				}
				_, _ = c.Write(line)
				<-push
				_, _ = io.WriteString(c, "push!\n")
				_, _ = io.Copy(c, c)
			}()
			var c net.Conn
			if err := n[0].pod.Do(func(ns.NetNS) error {
				var err error
				c, err = net.DialTimeout("tcp", n[1].podA+":8080", time.Second)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			echo := func(msg string) error {
				_ = c.SetDeadline(time.Now().Add(700 * time.Millisecond))
				if _, err := io.WriteString(c, msg); err != nil {
					return err
				}
				got := make([]byte, len(msg))
				_, err := io.ReadFull(c, got)
				return err
			}
			if err := echo("hello\n"); err != nil {
				t.Fatal(err)
			}
			if s := n[1].stats(t); s[FwdIngress] == 0 {
				t.Fatalf("the flow did not begin on the fast path: %v", s)
			}
			n[1].judge(t, true)
			sh(t, fmt.Sprintf("ip netns exec %s nft add element inet weft-fpt denied { %s }", filepath.Base(n[1].ns.Path()), n[1].podA))
			close(push)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			got := make([]byte, 6)
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("the responder's packet (a reply) did not arrive: %v", err)
			}
			err := echo("again\n")
			if spare && err != nil {
				t.Errorf("with spare the open flow was cut: %v", err)
			}
			if !spare && err == nil {
				t.Errorf("the deny did not cut the open flow: the initiator's packet passed as a reply")
			}
		})
	}
}

// Over VXLAN the programs build and unwrap the frames themselves: pod TCP
// (segmentation offload on, 100 kB each way) crosses with neither node's
// output, forward or input hook seeing a VXLAN or pod packet; a judged
// pod's flows go through the kernel's VXLAN device; VXLAN from an address
// that is no peer node is left to the kernel (its antispoof table).
func TestPrivilegedFastPathVXLAN(t *testing.T) {
	testutil.RequireRoot(t)
	n := newFastPathNodes(t, false, true)
	for _, node := range n {
		node.judge(t, false)
	}
	sh(t, fmt.Sprintf("ip netns exec %s ping -c1 -W1 198.18.9.2", filepath.Base(n[0].ns.Path())))
	if err := exchange(t, n[0], n[1], n[1].podA+":8080"); err != nil {
		t.Fatalf("pod to pod: %v", err)
	}
	for i, node := range n {
		if s := node.stats(t); s[FwdEncap] == 0 || s[FwdDecap] == 0 {
			t.Errorf("node %d did not wrap and unwrap the pods' VXLAN: %v", i+1, s)
		}
		for _, chain := range []string{"forward", "output", "input"} {
			if got := node.counted(t, chain); got != "0" {
				t.Errorf("node %d: %s packets took the %s hook, want 0", i+1, got, chain)
			}
		}
	}

	n[1].judge(t, true)
	before := n[1].stats(t)
	if err := exchange(t, n[0], n[1], n[1].podA+":8080"); err != nil {
		t.Fatalf("to a judged pod: %v", err)
	}
	if s := n[1].stats(t); s[FwdDecap] != before[FwdDecap] || s[FwdEncap] != before[FwdEncap] || s[PassJudged] == before[PassJudged] {
		t.Errorf("node 2 unwrapped or wrapped a judged pod's new flow: before %v, after %v", before, s)
	}
	if got := n[1].counted(t, "input"); got == "0" {
		t.Errorf("node 2: the judged pod's VXLAN did not reach the kernel's device")
	}
	n[1].judge(t, false)

	// Node 2 now knows node 1's device at another address: what node 1
	// sends comes from no peer node.
	sh(t, fmt.Sprintf("bridge -n %s fdb replace 02:00:00:00:00:01 dev weft.vxlan dst 198.18.9.99 self permanent", filepath.Base(n[1].ns.Path())))
	if err := n[1].ns.Do(func(ns.NetNS) error { return n[1].ctl.Sync() }); err != nil {
		t.Fatal(err)
	}
	before = n[1].stats(t)
	if err := n[0].pod.Do(func(ns.NetNS) error {
		c, err := net.Dial("udp", n[1].podA+":9")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("hi"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if s := n[1].stats(t); s[FwdDecap] != before[FwdDecap] || s[FwdIngress] == before[FwdIngress] {
		t.Errorf("node 2 unwrapped VXLAN from no peer node (or the kernel's device did not pass it on): before %v, after %v", before, s)
	}
}

// The controller follows the VXLAN device's forwarding entries as they
// change (a peer node at a new address), not only at its periodic resync.
func TestPrivilegedFastPathFollowsForwardingEntries(t *testing.T) {
	testutil.RequireRoot(t)
	n := newFastPathNodes(t, false, true)
	ctl := n[0].ctl
	ctl.cfg.Resync = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- n[0].ns.Do(func(ns.NetNS) error { return ctl.Run(ctx) }) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			t.Error(err)
		}
	}()
	peerOf := func() netip.Addr {
		var k [8]byte
		copy(k[:], []byte{2, 0, 0, 0, 0, 2})
		var v [4]byte
		if err := ctl.cfg.Datapath.coll.Maps["vteps"].Lookup(binary.NativeEndian.Uint64(k[:]), &v); err != nil {
			return netip.Addr{}
		}
		return netip.AddrFrom4(v)
	}
	waitFor := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if peerOf().String() == want {
				return
			}
		}
		t.Fatalf("the programs send node 2's frames to %v, want %s", peerOf(), want)
	}
	waitFor("198.18.9.2")
	// Let the namespaces' own link and route changes (IPv6 addresses
	// settling after the links came up) pass, so no other event syncs.
	time.Sleep(3 * time.Second)
	sh(t, fmt.Sprintf("bridge -n %s fdb replace 02:00:00:00:00:02 dev weft.vxlan dst 198.18.9.77 self permanent", filepath.Base(n[0].ns.Path())))
	waitFor("198.18.9.77")
}

// A judged pod's flow that conntrack tracks, whose entry carries the
// generation of the policy table in force, is carried once established:
// only its handshake and end take the forward hook. After a policy
// change its next packets are judged on the kernel's path again: a
// change that still allows it keeps it working (conntrack is liberal, so
// it takes back sequence numbers it has not seen), a deny cuts it. A
// carried flow's FIN reaches conntrack, so its entry leaves the
// established state. TCP is carried only while conntrack is liberal.
func TestPrivilegedFastPathStampedFlows(t *testing.T) {
	testutil.RequireRoot(t)
	for _, liberal := range []bool{true, false} {
		t.Run(fmt.Sprintf("liberal=%v", liberal), func(t *testing.T) {
			n := newFastPathNodes(t, false, false)
			n[0].judge(t, false)
			n[1].judge(t, true)
			node := filepath.Base(n[1].ns.Path())
			sh(t, fmt.Sprintf("ip netns exec %s sysctl -qw net.netfilter.nf_conntrack_tcp_be_liberal=%d", node, map[bool]int{true: 1, false: 0}[liberal]),
				fmt.Sprintf("ip netns exec %s nft add chain inet weft-fpt remember '{ type filter hook forward priority filter + 2; }'", node))
			stampAs := func(gen uint32) {
				t.Helper()
				sh(t, fmt.Sprintf("ip netns exec %s nft flush chain inet weft-fpt remember", node),
					fmt.Sprintf("ip netns exec %s nft add rule inet weft-fpt remember ct direction original ct mark set %d", node, gen))
				if err := n[1].ns.Do(func(ns.NetNS) error { n[1].ctl.SetGeneration(gen); return nil }); err != nil {
					t.Fatal(err)
				}
			}
			stampAs(7)
			serveEcho(t, n[1])
			a := dialEcho(t, n[0], n[1].podA+":8080")
			if err := a.echo(10); err != nil {
				t.Fatal(err)
			}
			hooked, before := n[1].forwarded(t), n[1].stats(t)
			if err := a.echo(100000); err != nil {
				t.Fatal(err)
			}
			after := n[1].stats(t)
			if !liberal {
				if after[FwdStamped] != 0 || n[1].forwarded(t) == hooked {
					t.Fatalf("a TCP flow was carried with conntrack strict: before %v, after %v", before, after)
				}
				return
			}
			if after[FwdStamped] == before[FwdStamped] || n[1].forwarded(t) != hooked {
				t.Fatalf("the stamped flow was not carried: forward hook %s then %s packets; before %v, after %v",
					hooked, n[1].forwarded(t), before, after)
			}

			stampAs(8) // a policy change that still allows the flow
			if err := a.echo(100000); err != nil {
				t.Fatalf("the flow, still allowed, broke after a policy change: %v", err)
			}
			if n[1].forwarded(t) == hooked {
				t.Errorf("after a policy change the flow was not judged again on the kernel's path")
			}

			b := dialEcho(t, n[0], n[1].podA+":8080")
			if err := b.echo(100000); err != nil {
				t.Fatal(err)
			}
			port := b.c.LocalAddr().(*net.TCPAddr).Port
			b.c.Close()
			time.Sleep(200 * time.Millisecond)
			out, err := exec.Command("ip", "netns", "exec", node, "conntrack", "-L", "-p", "tcp", "--sport", fmt.Sprint(port)).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "dport=8080") || strings.Contains(string(out), "ESTABLISHED") {
				t.Errorf("a closed carried flow's conntrack entry: %v %s", err, out)
			}

			sh(t, fmt.Sprintf("ip netns exec %s nft add element inet weft-fpt denied { %s }", node, n[1].podA))
			stampAs(9)
			if err := a.echo(10); err == nil {
				t.Errorf("a deny did not cut a carried flow")
			}
		})
	}
}

// serveEcho echoes every connection to the pod's port 8080.
func serveEcho(t *testing.T, to *fpNode) {
	t.Helper()
	var l net.Listener
	if err := to.pod.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", ":8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

type echoConn struct{ c net.Conn }

func dialEcho(t *testing.T, from *fpNode, addr string) echoConn {
	t.Helper()
	var c net.Conn
	if err := from.pod.Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", addr, time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return echoConn{c}
}

// echo sends size bytes and reads them back within a second.
func (e echoConn) echo(size int) error {
	_ = e.c.SetDeadline(time.Now().Add(time.Second))
	msg := strings.Repeat("x", size)
	go func() { _, _ = io.WriteString(e.c, msg) }()
	got := make([]byte, size)
	_, err := io.ReadFull(e.c, got)
	return err
}

// A UDP stream conntrack tracks, stamped with the generation in force, is
// carried once conntrack calls it a stream (assured: answered, and still
// going two seconds on), whatever conntrack's TCP mode: UDP has no
// window to lose track of.
func TestPrivilegedFastPathStampedUDP(t *testing.T) {
	testutil.RequireRoot(t)
	n := newFastPathNodes(t, false, false)
	n[0].judge(t, false)
	n[1].judge(t, true)
	node := filepath.Base(n[1].ns.Path())
	sh(t, fmt.Sprintf("ip netns exec %s sysctl -qw net.netfilter.nf_conntrack_tcp_be_liberal=0", node),
		fmt.Sprintf("ip netns exec %s nft add chain inet weft-fpt remember '{ type filter hook forward priority filter + 2; }'", node),
		fmt.Sprintf("ip netns exec %s nft add rule inet weft-fpt remember ct direction original ct mark set 7", node))
	if err := n[1].ns.Do(func(ns.NetNS) error { n[1].ctl.SetGeneration(7); return nil }); err != nil {
		t.Fatal(err)
	}
	var srv net.PacketConn
	if err := n[1].pod.Do(func(ns.NetNS) error {
		var err error
		srv, err = net.ListenPacket("udp", n[1].podA+":5353")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteTo(buf[:k], from)
		}
	}()
	var c net.Conn
	if err := n[0].pod.Do(func(ns.NetNS) error {
		var err error
		c, err = net.Dial("udp", n[1].podA+":5353")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ping := func() error {
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 16)
		_, err := c.Read(buf)
		return err
	}
	for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if err := ping(); err != nil {
			t.Fatal(err)
		}
	}
	before := n[1].stats(t)
	for range 10 {
		if err := ping(); err != nil {
			t.Fatal(err)
		}
	}
	if s := n[1].stats(t); s[FwdStamped]-before[FwdStamped] < 10 {
		t.Errorf("the UDP stream was not carried: before %v, after %v", before, s)
	}
}

// A pod's connection to a Service leaves a conntrack entry (kept after the
// socket is gone) whose reply tuple is the endpoint's address back to the
// pod's port. A later direct connection from the same port to the same
// endpoint, which the kernel allows (another destination), has replies
// of that tuple: they must reach the new socket, not be un-NATed into the
// old one. Only conntrack can give the new flow another source port, so
// its first packet takes the kernel's path.
func TestPrivilegedFastPathReusedServicePort(t *testing.T) {
	testutil.RequireRoot(t)
	n := newFastPathNodes(t, false, false)
	for _, node := range n {
		node.judge(t, false)
	}
	var tl net.Listener
	var ul net.PacketConn
	if err := n[1].pod.Do(func(ns.NetNS) error {
		var err error
		if tl, err = net.Listen("tcp", ":8080"); err != nil {
			return err
		}
		ul, err = net.ListenPacket("udp", ":8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	defer ul.Close()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	go func() {
		b := make([]byte, 1500)
		for {
			k, from, err := ul.ReadFrom(b)
			if err != nil {
				return
			}
			_, _ = ul.WriteTo(b[:k], from)
		}
	}()
	reuse := func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1) })
		if err != nil {
			return err
		}
		return serr
	}
	for i, f := range []struct{ vip, client, server string }{
		{"10.96.0.10:80", n[0].podA, n[1].podA + ":8080"},
		{"[fd96::10]:80", n[0].podA6, "[" + n[1].podA6 + "]:8080"},
	} {
		local := &net.TCPAddr{IP: net.ParseIP(f.client), Port: 40123 + 2*i}
		dial := func(addr string) error {
			return n[0].pod.Do(func(ns.NetNS) error {
				d := net.Dialer{LocalAddr: local, Timeout: time.Second, Control: reuse}
				c, err := d.Dial("tcp", addr)
				if err != nil {
					return err
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(time.Second))
				if _, err := io.WriteString(c, "ping\n"); err != nil {
					return err
				}
				_, err = io.ReadFull(c, make([]byte, 5))
				return err
			})
		}
		if err := dial(f.vip); err != nil {
			t.Fatalf("through the DNAT: %v", err)
		}
		if err := dial(f.server); err != nil {
			t.Errorf("direct, from the port a Service connection used: %v", err)
		}

		// UDP: one socket asks the Service, then the endpoint directly;
		// the endpoint's answer must come from the endpoint.
		if err := n[0].pod.Do(func(ns.NetNS) error {
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(f.client), Port: 40124 + 2*i})
			if err != nil {
				return err
			}
			defer c.Close()
			for _, to := range []string{f.vip, f.server} {
				if _, err := c.WriteTo([]byte("ping"), udpAddr(to)); err != nil {
					return err
				}
				_ = c.SetReadDeadline(time.Now().Add(time.Second))
				_, from, err := c.ReadFrom(make([]byte, 16))
				if err != nil {
					return fmt.Errorf("asking %s: %w", to, err)
				}
				if from.String() != to {
					return fmt.Errorf("asked %s, the answer came from %s", to, from)
				}
			}
			return nil
		}); err != nil {
			t.Errorf("UDP: %v", err)
		}
	}
}

func udpAddr(s string) *net.UDPAddr {
	a, _ := net.ResolveUDPAddr("udp", s)
	return a
}
