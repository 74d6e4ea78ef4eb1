package proxy

import (
	"net"
	"reflect"
	"strings"
	"testing"
)

func TestAddressGuard(t *testing.T) {
	g := AddressGuard{
		Forbidden: []*net.IPNet{mustCIDR("10.244.0.0/16"), mustCIDR("10.96.0.0/16")},
		Reserved:  map[string]string{"198.18.1.11": "node weft-node-1", "198.18.1.10": "an API server endpoint"},
	}
	ips := func(s ...string) []net.IP {
		var out []net.IP
		for _, x := range s {
			out = append(out, net.ParseIP(x))
		}
		return out
	}
	sp := ServicePort{Namespace: "t", Name: "s", ExternalIPs: ips("203.0.113.5", "198.18.1.11", "10.244.1.7", "10.96.0.1", "198.18.1.10", "203.0.113.9"),
		LoadBalancerIPs: ips("203.0.113.9")}
	out, refused := g.Admit([]ServicePort{sp, sp})
	for _, p := range out {
		if !reflect.DeepEqual(p.ExternalIPs, ips("203.0.113.5", "203.0.113.9")) || !reflect.DeepEqual(p.LoadBalancerIPs, ips("203.0.113.9")) {
			t.Fatalf("kept %v / %v", p.ExternalIPs, p.LoadBalancerIPs)
		}
	}
	if len(refused) != 4 {
		t.Fatalf("refusals %v, want 4 (each address once)", refused)
	}
	for _, r := range refused {
		if r.Reason == "" || !strings.Contains(r.Reason, r.IP.String()) {
			t.Errorf("refusal without a reason: %v", r)
		}
	}
	if len(sp.ExternalIPs) != 6 {
		t.Fatal("Admit changed its input")
	}
	// The allow-list limits externalIPs, not load-balancer IPs.
	g.AllowExternal = []*net.IPNet{mustCIDR("203.0.113.0/28")}
	sp.ExternalIPs = ips("203.0.113.5", "203.0.113.200", "192.168.7.7")
	sp.LoadBalancerIPs = ips("192.168.7.7")
	out, refused = g.Admit([]ServicePort{sp})
	if !reflect.DeepEqual(out[0].ExternalIPs, ips("203.0.113.5", "192.168.7.7")) || len(refused) != 1 {
		t.Fatalf("with --external-ip-cidrs: kept %v, refused %v", out[0].ExternalIPs, refused)
	}
}
