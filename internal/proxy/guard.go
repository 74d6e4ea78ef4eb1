package proxy

import (
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
)

// AddressGuard decides which externalIPs and load-balancer IPs a Service
// may take. Whoever can create a Service can set externalIPs; without a
// guard a tenant could capture traffic to a node, to the API server or to
// another tenant's pods and services (the CVE-2020-8554 class).
type AddressGuard struct {
	// Forbidden: no external address inside (the cluster and service
	// CIDRs: pods and services of others).
	Forbidden []*net.IPNet
	// Reserved: addresses no Service may take, with what they are (every
	// node's addresses, the API server's endpoints).
	Reserved map[string]string
	// AllowExternal, when set, is where externalIPs must lie
	// (--external-ip-cidrs); load-balancer IPs are not limited by it.
	AllowExternal []*net.IPNet
}

// Refusal is an address a Service asked for and did not get.
type Refusal struct {
	IP     net.IP
	Reason string
}

// reason says why ip may not be taken ("" when it may); lb: it is a
// load-balancer ingress IP, not an externalIP.
func (g AddressGuard) reason(ip net.IP, lb bool) string {
	if what, ok := g.Reserved[ip.String()]; ok {
		return fmt.Sprintf("%s is %s", ip, what)
	}
	for _, n := range g.Forbidden {
		if n.Contains(ip) {
			return fmt.Sprintf("%s is inside the cluster network %s", ip, n)
		}
	}
	if !lb && len(g.AllowExternal) > 0 && !slices.ContainsFunc(g.AllowExternal, func(n *net.IPNet) bool { return n.Contains(ip) }) {
		return fmt.Sprintf("externalIP %s is outside --external-ip-cidrs", ip)
	}
	return ""
}

// Admit returns ports without the external addresses the guard refuses,
// and the refusals (each address once).
func (g AddressGuard) Admit(ports []ServicePort) ([]ServicePort, []Refusal) {
	var refused []Refusal
	seen := map[string]bool{}
	keep := func(ips []net.IP, lbs []net.IP) []net.IP {
		var out []net.IP
		for _, ip := range ips {
			lb := slices.ContainsFunc(lbs, ip.Equal)
			r := g.reason(ip, lb)
			if r == "" {
				out = append(out, ip)
				continue
			}
			if !seen[ip.String()] {
				seen[ip.String()] = true
				refused = append(refused, Refusal{IP: ip, Reason: r})
			}
		}
		return out
	}
	out := make([]ServicePort, len(ports))
	for i, sp := range ports {
		lbs := sp.LoadBalancerIPs
		sp.ExternalIPs = keep(sp.ExternalIPs, lbs)
		sp.LoadBalancerIPs = keep(sp.LoadBalancerIPs, lbs)
		out[i] = sp
	}
	return out, refused
}

// Key identifies the guard's content, to notice when it changed.
func (g AddressGuard) Key() string {
	var parts []string
	for ip, what := range g.Reserved {
		parts = append(parts, ip+"="+what)
	}
	sort.Strings(parts)
	for _, n := range append(append([]*net.IPNet{}, g.Forbidden...), g.AllowExternal...) {
		parts = append(parts, n.String())
	}
	return strings.Join(parts, ",")
}
