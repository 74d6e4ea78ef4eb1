package nodedns

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"sigs.k8s.io/knftables"

	weftdns "weft.dev/weft/internal/dns"
	"weft.dev/weft/internal/testutil"
)

// link joins node and peer with a veth: nodeName/nodeIP on the node, the
// peer's end with peerIP and a route to the cache address through it.
func link(t *testing.T, node, peer ns.NetNS, nodeName, nodeIP, peerIP string) {
	t.Helper()
	err := node.Do(func(ns.NetNS) error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nodeName}, PeerName: "eth0"}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(nodeIP + "/24")
		if err := netlink.AddrAdd(v, a); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(v); err != nil {
			return err
		}
		p, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.LinkSetNsFd(p, int(peer.Fd()))
	})
	if err != nil {
		t.Fatal(err)
	}
	err = peer.Do(func(ns.NetNS) error {
		p, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(peerIP + "/24")
		if err := netlink.AddrAdd(p, a); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(p); err != nil {
			return err
		}
		_, dst, _ := net.ParseCIDR("169.254.20.10/32")
		return netlink.RouteAdd(&netlink.Route{LinkIndex: p.Attrs().Index, Dst: dst, Gw: net.ParseIP(nodeIP)})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The node-local cache answers this node's pods and nobody routed to it from
// the underlay or the tunnel.
func TestPrivilegedAnswersOnlyThisNode(t *testing.T) {
	testutil.RequireRoot(t)
	node, pod, underlay, tunnel := testutil.NewNetNS(t), testutil.NewNetNS(t), testutil.NewNetNS(t), testutil.NewNetNS(t)
	link(t, node, pod, "weftpodtest01", "10.0.0.1", "10.0.0.2")
	link(t, node, underlay, "eth9", "10.0.1.1", "10.0.1.2")
	link(t, node, tunnel, "weft.vxlan", "10.0.2.1", "10.0.2.2")
	addr := net.ParseIP("169.254.20.10").To4()
	var stop func()
	err := node.Do(func(ns.NetNS) error {
		lo, _ := netlink.LinkByName("lo")
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		if err := EnsureAddress(addr); err != nil {
			return err
		}
		nft, err := knftables.New(knftables.InetFamily, TableName)
		if err != nil {
			return err
		}
		tx := nft.NewTransaction()
		Build(tx, addr, "weft", "weft.vxlan")
		if err := nft.Run(context.Background(), tx); err != nil {
			return err
		}
		// No upstream: every query gets REFUSED, which is an answer.
		stop, err = weftdns.Listen("169.254.20.10:53", &weftdns.Handler{}, make(chan error, 4))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ask := func(from ns.NetNS, proto string) error {
		return from.Do(func(ns.NetNS) error {
			m := new(dns.Msg)
			m.SetQuestion("example.org.", dns.TypeA)
			c := &dns.Client{Net: proto, Timeout: 500 * time.Millisecond}
			_, _, err := c.Exchange(m, "169.254.20.10:53")
			return err
		})
	}
	for _, proto := range []string{"udp", "tcp"} {
		if err := ask(pod, proto); err != nil {
			t.Errorf("a pod of this node over %s: %v", proto, err)
		}
		if err := ask(underlay, proto); err == nil {
			t.Errorf("answered a query from the underlay over %s", proto)
		}
		if err := ask(tunnel, proto); err == nil {
			t.Errorf("answered a query from the tunnel device over %s", proto)
		}
	}
	if err := ask(node, "udp"); err != nil {
		t.Errorf("the node itself (lo): %v", err)
	}
}
