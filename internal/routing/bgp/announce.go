package bgp

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// AnnotationCommunities on a Service lists the BGP communities its
// addresses are announced with ("65000:100,65000:200").
const AnnotationCommunities = "bgp.weft.dev/communities"

// Announcement is one prefix this node originates.
type Announcement struct {
	Prefix      netip.Prefix
	Communities []uint32
	// Service is "namespace/name" for a service address, "" for a pod CIDR.
	Service string
}

// Key identifies an announcement's prefix and attributes.
func (a Announcement) Key() string {
	return fmt.Sprintf("%s|%v", a.Prefix, a.Communities)
}

// ServiceAddresses are the address ranges whose service IPs may be
// announced: a tenant who sets spec.externalIPs must not pull a range
// the operator did not give to services (CVE-2020-8554) to the cluster.
type ServiceAddresses struct {
	ExternalIPs     []netip.Prefix
	LoadBalancerIPs []netip.Prefix
	AnnounceCluster bool
}

// LocalEndpoints reports whether this node has a ready endpoint of a
// Service (for externalTrafficPolicy Local).
type LocalEndpoints func(namespace, name string) bool

// PlanAnnouncements returns what this node announces: its pod CIDRs, and
// the addresses of the Services that it may announce. A Service with
// externalTrafficPolicy Local is announced only by nodes with a ready
// endpoint of it, so the router never sends its traffic to a node that
// would drop it. Invalid community annotations are returned as problems
// (the addresses are still announced, without communities).
func PlanAnnouncements(local Node, svcs []*corev1.Service, allowed ServiceAddresses, hasLocal LocalEndpoints) ([]Announcement, []error) {
	byPrefix := map[netip.Prefix]Announcement{}
	for _, c := range local.PodCIDRs {
		byPrefix[c] = Announcement{Prefix: c}
	}
	var problems []error
	for _, s := range svcs {
		key := s.Namespace + "/" + s.Name
		addrs := serviceAddresses(s, allowed)
		if len(addrs) == 0 {
			continue
		}
		if s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal &&
			(s.Spec.Type == corev1.ServiceTypeLoadBalancer || s.Spec.Type == corev1.ServiceTypeNodePort) &&
			!hasLocal(s.Namespace, s.Name) {
			continue
		}
		comms, err := ParseCommunities(s.Annotations[AnnotationCommunities])
		if err != nil {
			problems = append(problems, fmt.Errorf("service %s: annotation %s: %w", key, AnnotationCommunities, err))
		}
		for _, a := range addrs {
			p := netip.PrefixFrom(a, a.BitLen())
			if prev, ok := byPrefix[p]; ok && (prev.Service == "" || prev.Service < key) {
				continue // one address, several Services: the first by name decides
			}
			byPrefix[p] = Announcement{Prefix: p, Communities: comms, Service: key}
		}
	}
	out := make([]Announcement, 0, len(byPrefix))
	for _, a := range byPrefix {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Prefix.String() < out[j].Prefix.String() })
	return out, problems
}

// serviceAddresses lists the addresses of a Service that may be announced.
func serviceAddresses(s *corev1.Service, allowed ServiceAddresses) []netip.Addr {
	var out []netip.Addr
	add := func(ip string, in []netip.Prefix) {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return
		}
		a = a.Unmap()
		for _, p := range in {
			if p.Contains(a) {
				out = append(out, a)
				return
			}
		}
	}
	for _, ip := range s.Spec.ExternalIPs {
		add(ip, allowed.ExternalIPs)
	}
	if s.Spec.Type == corev1.ServiceTypeLoadBalancer {
		for _, in := range s.Status.LoadBalancer.Ingress {
			add(in.IP, allowed.LoadBalancerIPs)
		}
	}
	if allowed.AnnounceCluster {
		for _, ip := range s.Spec.ClusterIPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}

// ParseCommunities reads "AS:VALUE" pairs separated by commas; each half
// is a 16-bit number (RFC 1997).
func ParseCommunities(s string) ([]uint32, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []uint32
	for _, f := range strings.Split(s, ",") {
		hi, lo, ok := strings.Cut(strings.TrimSpace(f), ":")
		h, err1 := strconv.ParseUint(hi, 10, 16)
		l, err2 := strconv.ParseUint(lo, 10, 16)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%q is not a community (AS:VALUE, each 0-65535)", strings.TrimSpace(f))
		}
		out = append(out, uint32(h)<<16|uint32(l))
	}
	if len(out) > 32 {
		return nil, fmt.Errorf("%d communities: at most 32", len(out))
	}
	return out, nil
}

// Installable says whether a learned route may go into the kernel: never
// a default route, and never one over a network of this node (its pod
// CIDRs, the service CIDRs, its underlay subnet), whatever a peer says.
func Installable(p netip.Prefix, reserved []netip.Prefix) (bool, string) {
	if p.Bits() == 0 {
		return false, "default route"
	}
	for _, r := range reserved {
		if r.Overlaps(p) {
			return false, "overlaps " + r.String() + ", a network of this node"
		}
	}
	return true, ""
}
