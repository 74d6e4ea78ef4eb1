package antispoof

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"sigs.k8s.io/knftables"

	"weft.dev/weft/internal/testutil"
)

func run(t *testing.T, cmds ...[]string) {
	t.Helper()
	for _, c := range cmds {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
}

// received reports whether a UDP datagram sent from `from` with source src
// to dst reaches a listener in `to`.
func received(t *testing.T, from, to ns.NetNS, src, dst string) bool {
	t.Helper()
	var pc net.PacketConn
	if err := to.Do(func(ns.NetNS) error {
		var err error
		pc, err = net.ListenPacket("udp", dst)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := from.Do(func(ns.NetNS) error {
		d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("udp", dst)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, _, err := pc.ReadFrom(make([]byte, 16))
	return err == nil
}

// A pod sends only with its own address: another pod's address or one
// from outside is dropped on its host veth. VXLAN frames come in only from
// nodes.
func TestPrivilegedPodsAndVXLANCannotSpoof(t *testing.T) {
	testutil.RequireRoot(t)
	node, podA, podB, outside := testutil.NewNetNS(t), testutil.NewNetNS(t), testutil.NewNetNS(t), testutil.NewNetNS(t)
	n, a, b, o := filepath.Base(node.Path()), filepath.Base(podA.Path()), filepath.Base(podB.Path()), filepath.Base(outside.Path())
	run(t,
		[]string{"ip", "-n", n, "link", "add", "weftaaaa", "type", "veth", "peer", "name", "eth0", "netns", a},
		[]string{"ip", "-n", n, "link", "add", "weftbbbb", "type", "veth", "peer", "name", "eth0", "netns", b},
		[]string{"ip", "-n", n, "link", "add", "eth9", "type", "veth", "peer", "name", "eth0", "netns", o},
		[]string{"ip", "-n", n, "addr", "add", "10.244.1.1/32", "dev", "weftaaaa"},
		[]string{"ip", "-n", n, "addr", "add", "10.244.1.1/32", "dev", "weftbbbb"},
		[]string{"ip", "-n", n, "addr", "add", "198.18.1.11/24", "dev", "eth9"},
		[]string{"ip", "-n", n, "link", "set", "weftaaaa", "up"},
		[]string{"ip", "-n", n, "link", "set", "weftbbbb", "up"},
		[]string{"ip", "-n", n, "link", "set", "eth9", "up"},
		[]string{"ip", "-n", n, "link", "set", "lo", "up"},
		[]string{"ip", "-n", n, "route", "add", "10.244.1.5/32", "dev", "weftaaaa"},
		[]string{"ip", "-n", n, "route", "add", "10.244.1.6/32", "dev", "weftbbbb"},
		[]string{"ip", "-n", a, "addr", "add", "10.244.1.5/32", "dev", "eth0"},
		[]string{"ip", "-n", a, "addr", "add", "10.244.1.6/32", "dev", "eth0"}, // B's address, to spoof with
		[]string{"ip", "-n", a, "addr", "add", "203.0.113.9/32", "dev", "eth0"},
		[]string{"ip", "-n", a, "link", "set", "eth0", "up"},
		[]string{"ip", "-n", a, "route", "add", "10.244.1.1", "dev", "eth0"},
		[]string{"ip", "-n", a, "route", "add", "default", "via", "10.244.1.1", "dev", "eth0"},
		[]string{"ip", "-n", o, "addr", "add", "198.18.1.12/24", "dev", "eth0"},
		[]string{"ip", "-n", o, "addr", "add", "198.18.1.66/24", "dev", "eth0"}, // not a node
		[]string{"ip", "-n", o, "link", "set", "eth0", "up"},
	)
	err := node.Do(func(ns.NetNS) error {
		nft, err := knftables.New(knftables.InetFamily, TableName)
		if err != nil {
			return err
		}
		tx := nft.NewTransaction()
		Build(tx, Config{PodInterfaces: "weft", Tunnel: "weft.vxlan", VXLANPort: 4789}, []net.IP{net.ParseIP("198.18.1.12")})
		if err := nft.Run(context.Background(), tx); err != nil {
			return err
		}
		// Something that needs conntrack, as the agent's other tables do,
		// so that the node tracks what notrack does not exempt.
		tracked, err := knftables.New(knftables.InetFamily, "weft-test-ct")
		if err != nil {
			return err
		}
		tx = tracked.NewTransaction()
		tx.Add(&knftables.Table{})
		tx.Add(&knftables.Chain{Name: "input", Type: knftables.PtrTo(knftables.FilterType),
			Hook: knftables.PtrTo(knftables.InputHook), Priority: knftables.PtrTo(knftables.FilterPriority)})
		tx.Add(&knftables.Rule{Chain: "input", Rule: "ct state new counter"})
		return tracked.Run(context.Background(), tx)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !received(t, podA, node, "10.244.1.5", "10.244.1.1:7000") {
		t.Error("a pod's packet with its own address was dropped")
	}
	if received(t, podA, node, "10.244.1.6", "10.244.1.1:7001") {
		t.Error("a pod sent with another pod's address")
	}
	if received(t, podA, node, "203.0.113.9", "10.244.1.1:7002") {
		t.Error("a pod sent with an address from outside")
	}
	if !received(t, outside, node, "198.18.1.12", "198.18.1.11:4789") {
		t.Error("VXLAN from a node was dropped")
	}
	if received(t, outside, node, "198.18.1.66", "198.18.1.11:4789") {
		t.Error("VXLAN from a host that is no node reached the node")
	}
	if !received(t, outside, node, "198.18.1.66", "198.18.1.11:4790") {
		t.Error("other UDP from the underlay was dropped")
	}
	entries := func(port string) string {
		out, _ := exec.Command("nsenter", "--net="+node.Path(), "conntrack", "-L", "-p", "udp", "--dport", port).Output()
		return string(out)
	}
	if got := entries("4789"); got != "" {
		t.Errorf("VXLAN between nodes is tracked: %s", got)
	}
	if got := entries("4790"); got == "" {
		t.Error("other UDP is not tracked: the check above proves nothing")
	}
}
