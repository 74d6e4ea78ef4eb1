package proxy

import (
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// StaleUDP describes UDP conntrack entries that must go after a sync:
// UDP has no connection end, so an entry keeps sending a client's
// packets to an endpoint that is gone (or to the rejection of a service
// that now has endpoints) until it times out.
type StaleUDP struct {
	// ServiceIPs and Port: entries whose original destination is one of
	// them; NodePort likewise on any local address.
	ServiceIPs []net.IP
	Port       int32
	NodePort   int32
	// Endpoint set: only entries DNATed to it. Nil: every entry to the
	// service (it had no endpoints, its entries are rejections).
	Endpoint net.IP
}

// FindStaleUDP compares the service ports of two syncs. An endpoint is
// stale when traffic may have gone to it before (it was selected, or it
// was serving: a terminating endpoint that Local traffic policies fall
// back to is not among the selected ones) and it is not serving now — the
// rule kube-proxy's conntrack reconciler applies.
func FindStaleUDP(prev, next []ServicePort) []StaleUDP {
	old := map[string]ServicePort{}
	for _, sp := range prev {
		old[sp.Key()] = sp
	}
	var out []StaleUDP
	for _, sp := range next {
		if lower(sp.Protocol) != "udp" {
			continue
		}
		before, ok := old[sp.Key()]
		ips := append(append([]net.IP{}, sp.ClusterIPs...), sp.ExternalIPs...)
		if ok && len(before.Endpoints) == 0 && len(sp.Endpoints) > 0 {
			out = append(out, StaleUDP{ServiceIPs: ips, Port: sp.Port, NodePort: sp.NodePort})
			continue
		}
		serving := servingEndpoints(sp)
		for _, e := range servingEndpoints(before) {
			if !containsEndpoint(serving, e) {
				out = append(out, StaleUDP{ServiceIPs: ips, Port: sp.Port, NodePort: sp.NodePort, Endpoint: e.IP})
			}
		}
	}
	// Services that are gone entirely.
	seen := map[string]bool{}
	for _, sp := range next {
		seen[sp.Key()] = true
	}
	for key, sp := range old {
		if !seen[key] && lower(sp.Protocol) == "udp" {
			for _, e := range servingEndpoints(sp) {
				out = append(out, StaleUDP{ServiceIPs: append(append([]net.IP{}, sp.ClusterIPs...), sp.ExternalIPs...), Port: sp.Port, NodePort: sp.NodePort, Endpoint: e.IP})
			}
		}
	}
	return out
}

// servingEndpoints: the selected endpoints and every other serving one.
func servingEndpoints(sp ServicePort) []Endpoint {
	out := append([]Endpoint{}, sp.Endpoints...)
	for _, e := range sp.AllEndpoints {
		if e.Serving && !containsEndpoint(out, e) {
			out = append(out, e)
		}
	}
	return out
}

// Match implements netlink.CustomConntrackFilter.
func (s StaleUDP) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	if f.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	if s.Endpoint != nil && !f.Reverse.SrcIP.Equal(s.Endpoint) {
		return false
	}
	if s.NodePort > 0 && f.Forward.DstPort == uint16(s.NodePort) {
		return true
	}
	if f.Forward.DstPort != uint16(s.Port) {
		return false
	}
	for _, ip := range s.ServiceIPs {
		if f.Forward.DstIP.Equal(ip) {
			return true
		}
	}
	return false
}

// DeleteStaleUDP removes the matching conntrack entries of one family
// (IPv4 when empty).
func DeleteStaleUDP(family corev1.IPFamily, stale []StaleUDP) (uint, error) {
	if len(stale) == 0 {
		return 0, nil
	}
	filters := make([]netlink.CustomConntrackFilter, len(stale))
	for i := range stale {
		filters[i] = stale[i]
	}
	af := netlink.InetFamily(unix.AF_INET)
	if family == corev1.IPv6Protocol {
		af = unix.AF_INET6
	}
	return netlink.ConntrackDeleteFilters(netlink.ConntrackTable, af, filters...)
}
