package proxy

import (
	"context"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"sigs.k8s.io/knftables"
)

// The tracer's unit tests are only as good as its model of the kernel. On
// a map lookup that misses (a vmap, or a dnat ... map), the kernel does not
// drop the packet: the rule does not match and the next rule runs. One
// ruleset, the kernel and the tracer must agree on where the packet ends.
func TestPrivilegedTracerMapMissMatchesKernel(t *testing.T) {
	tp := newTopo(t)
	serveName(t, tp.server, "10.244.1.2:8080", "after-the-misses")
	m := newRuleset()
	for _, c := range []struct {
		name string
		typ  knftables.BaseChainType
		hook knftables.BaseChainHook
		prio knftables.BaseChainPriority
	}{
		{"nat-prerouting", knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority},
		{"nat-postrouting", knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority},
		{"filter-forward", knftables.FilterType, knftables.ForwardHook, knftables.FilterPriority},
	} {
		m.Add(&knftables.Chain{Name: c.name, Type: knftables.PtrTo(c.typ), Hook: knftables.PtrTo(c.hook), Priority: knftables.PtrTo(c.prio)})
	}
	m.Add(&knftables.Map{Name: "vm", Type: "ipv4_addr . inet_proto . inet_service : verdict"})
	m.Add(&knftables.Map{Name: "eps", Type: "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service"})
	// Elements for another address only: the packet's lookups miss.
	m.Add(&knftables.Element{Map: "vm", Key: []string{"10.96.0.98", "tcp", "80"}, Value: []string{"drop"}})
	m.Add(&knftables.Element{Map: "eps", Key: []string{"10.96.0.98", "tcp", "80"}, Value: []string{"10.244.1.2 . 9"}})
	m.Add(&knftables.Rule{Chain: "nat-prerouting", Rule: "ip daddr . meta l4proto . th dport vmap @vm"})
	m.Add(&knftables.Rule{Chain: "nat-prerouting", Rule: "dnat ip addr . port to ip daddr . meta l4proto . th dport map @eps"})
	m.Add(&knftables.Rule{Chain: "nat-prerouting", Rule: "meta l4proto tcp dnat ip to 10.244.1.2:8080"})

	if err := tp.node.Do(func(ns.NetNS) error {
		nft, err := knftables.New(knftables.InetFamily, "weft-test-mapmiss")
		if err != nil {
			return err
		}
		tx := nft.NewTransaction()
		m.Full(tx)
		return nft.Run(context.Background(), tx)
	}); err != nil {
		t.Fatal(err)
	}
	got, err := dial(tp.client, "10.96.0.99:80")
	if err != nil || got != "after-the-misses 10.244.0.2" {
		t.Fatalf("kernel: %q %v; want the server behind the third rule", got, err)
	}
	res := newTracer(t, m).trace(packet{src: "10.244.0.2", dst: "10.96.0.99", proto: "tcp", dport: 80}, false)
	if res.verdict != "accept" || res.dnat != "10.244.1.2:8080" {
		t.Fatalf("tracer: verdict %s, DNAT %q; the kernel reached 10.244.1.2:8080", res.verdict, res.dnat)
	}
}
