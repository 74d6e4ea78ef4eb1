package fastpath

import (
	"net/netip"
	"reflect"
	"testing"
)

// The programs go on pod veths and uplinks only; an endpoint per /32 or /128 via
// a pod veth; an address policy has not reported is judged, one a policy
// selects in either direction is judged, and without a policy controller
// none is.
func TestPlan(t *testing.T) {
	devs := []Device{{1, "lo", false}, {2, "eth0", true}, {3, "weft.vxlan", false}, {4, "weftaaaa", true},
		{5, "weftbbbb", true}, {6, "weftcccc", true}, {7, "weftdummy", false}, {8, "other0", true}}
	routes := []Route{
		{netip.MustParsePrefix("10.244.1.5/32"), 4},
		{netip.MustParsePrefix("10.244.1.6/32"), 5},
		{netip.MustParsePrefix("10.244.1.7/32"), 6},
		{netip.MustParsePrefix("10.244.1.8/32"), 6},
		{netip.MustParsePrefix("10.244.2.0/24"), 3}, // another node's pods
		{netip.MustParsePrefix("10.244.1.9/32"), 8}, // not a pod veth
		{netip.MustParsePrefix("fd00::5/128"), 4},
		{netip.MustParsePrefix("fd00::6/128"), 5},
		{netip.MustParsePrefix("10.244.1.64/26"), 4}, // not one address
		{netip.MustParsePrefix("fd00::/64"), 4},      // not one address
	}
	judged := map[netip.Addr]Judged{
		netip.MustParseAddr("10.244.1.5"): {},
		netip.MustParseAddr("10.244.1.6"): {Ingress: true},
		netip.MustParseAddr("10.244.1.7"): {Egress: true},
		netip.MustParseAddr("fd00::6"):    {},
	}
	c := &Controller{cfg: Config{PodPrefix: "weft", Uplinks: []string{"weft.vxlan"}, Underlay: 2, Policy: true}}
	p := c.plan(devs, routes, judged)
	if want := []int{4, 5, 6}; !reflect.DeepEqual(p.Pods, want) {
		t.Errorf("pod devices %v, want %v", p.Pods, want)
	}
	if want := []int{2, 3}; !reflect.DeepEqual(p.Uplinks, want) {
		t.Errorf("uplinks %v, want %v", p.Uplinks, want)
	}
	want := map[netip.Addr]Endpoint{
		netip.MustParseAddr("10.244.1.5"): {IfIndex: 4},
		netip.MustParseAddr("10.244.1.6"): {IfIndex: 5, Judged: true},
		netip.MustParseAddr("10.244.1.7"): {IfIndex: 6, Judged: true},
		netip.MustParseAddr("10.244.1.8"): {IfIndex: 6, Judged: true}, // not reported yet
		netip.MustParseAddr("fd00::5"):    {IfIndex: 4, Judged: true},
		netip.MustParseAddr("fd00::6"):    {IfIndex: 5},
	}
	if !reflect.DeepEqual(p.Endpoints, want) {
		t.Errorf("endpoints %v, want %v", p.Endpoints, want)
	}
	c.cfg.Policy = false
	p = c.plan(devs, routes, nil)
	for a, ep := range p.Endpoints {
		if ep.Judged {
			t.Errorf("%v judged without a policy controller", a)
		}
	}
}
