// Package proxy is weft's service proxy (the kube-proxy replacement).
// serviceports.go turns Services and EndpointSlices into service ports;
// compile.go turns service ports into a Ruleset (the nftables objects as
// data, ruleset.go); both are pure. runner.go writes Rulesets through
// knftables and netlink from a coalescing loop fed by informers.
package proxy

import (
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// ServicePort is one port of one Service: what a client can connect to.
type ServicePort struct {
	Namespace, Name, PortName string
	Protocol                  corev1.Protocol
	ClusterIPs                []net.IP
	ExternalIPs               []net.IP // externalIPs and LoadBalancer ingress IPs
	// LoadBalancerIPs are the LoadBalancer ingress IPs (also in
	// ExternalIPs): only they are subject to SourceRanges.
	LoadBalancerIPs []net.IP
	Port            int32
	NodePort        int32
	// AllEndpoints are every endpoint of the port (of the proxy's address
	// family); the compiler picks
	// from them per traffic policy (see SelectEndpoints).
	AllEndpoints []Endpoint
	// Endpoints are the usable cluster-wide endpoints.
	Endpoints []Endpoint
	// InternalLocal / ExternalLocal: internal/externalTrafficPolicy Local.
	InternalLocal, ExternalLocal bool
	HealthCheckNodePort          int32
	// AffinitySeconds > 0: sessionAffinity ClientIP with this timeout.
	AffinitySeconds int32
	// SourceRanges restrict traffic to the LoadBalancerIPs
	// (loadBalancerSourceRanges); NodePorts and externalIPs stay open, as
	// with kube-proxy.
	SourceRanges []*net.IPNet
	// Created is the Service's creation time: of two Services asking for
	// the same external address, the older gets it.
	Created time.Time
}

// TopologyEndpoints narrows the usable endpoints by hints, as kube-proxy
// does (whatever the Service asks: hints are set by whoever fills the
// slices). Only ready endpoints count: when every one carries node hints
// and one is hinted for this node, those hinted for this node; else when
// every one carries zone hints and one is hinted for this zone, those;
// else all of them (also when no endpoint is ready and serving-terminating
// ones stand in).
func (s ServicePort) TopologyEndpoints(node, zone string) []Endpoint {
	allNode, allZone, forNode, forZone, anyReady := true, true, false, false, false
	for _, e := range s.Endpoints {
		if !e.Ready {
			continue
		}
		anyReady = true
		if len(e.hintNodes()) == 0 {
			allNode = false
		} else if slices.Contains(e.hintNodes(), node) {
			forNode = true
		}
		if len(e.hintZones()) == 0 {
			allZone = false
		} else if slices.Contains(e.hintZones(), zone) {
			forZone = true
		}
	}
	var keep func(Endpoint) bool
	switch {
	case !anyReady:
		return s.Endpoints
	case allNode && forNode:
		keep = func(e Endpoint) bool { return slices.Contains(e.hintNodes(), node) }
	case allZone && forZone:
		keep = func(e Endpoint) bool { return slices.Contains(e.hintZones(), zone) }
	default:
		return s.Endpoints
	}
	var out []Endpoint
	for _, e := range s.Endpoints {
		if e.Ready && keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// LocalEndpoints returns the usable endpoints on node.
func (s ServicePort) LocalEndpoints(node string) []Endpoint {
	var local []Endpoint
	for _, e := range s.AllEndpoints {
		if e.NodeName == node {
			local = append(local, e)
		}
	}
	return SelectEndpoints(local)
}

// Key names a service port uniquely.
func (s ServicePort) Key() string {
	port := s.PortName
	if port == "" {
		port = fmt.Sprint(s.Port)
	}
	return fmt.Sprintf("%s/%s/%s/%s", s.Namespace, s.Name, lower(s.Protocol), port)
}

// Endpoint is one backend address of a service port.
type Endpoint struct {
	IP          net.IP
	Port        int32
	Ready       bool
	Serving     bool
	Terminating bool
	NodeName    string
	// Hints: topology hints from the EndpointSlice controller (nil: none;
	// a pointer, as most endpoints have none and there are 100,000s).
	Hints *Hints
}

// Hints are the zones and nodes an endpoint is hinted for.
type Hints struct{ Zones, Nodes []string }

func (e Endpoint) hintZones() []string {
	if e.Hints == nil {
		return nil
	}
	return e.Hints.Zones
}

func (e Endpoint) hintNodes() []string {
	if e.Hints == nil {
		return nil
	}
	return e.Hints.Nodes
}

func (e Endpoint) String() string { return net.JoinHostPort(e.IP.String(), fmt.Sprint(e.Port)) }

func lower(p corev1.Protocol) string {
	switch p {
	case corev1.ProtocolUDP:
		return "udp"
	case corev1.ProtocolSCTP:
		return "sctp"
	default:
		return "tcp"
	}
}

// ServicePorts is ServicePortsFor the IPv4 family.
func ServicePorts(svc *corev1.Service, slices []*discoveryv1.EndpointSlice) []ServicePort {
	return ServicePortsFor(corev1.IPv4Protocol, svc, slices)
}

// ServicePortsFor turns a Service and its EndpointSlices into the service
// ports of one address family, with their usable endpoints: the
// family's ClusterIP, external and load-balancer IPs, and endpoints of
// slices of that address type. A service without a ClusterIP of the
// family (single-stack of the other one, headless) and ExternalName
// services have no proxy state.
func ServicePortsFor(family corev1.IPFamily, svc *corev1.Service, slices []*discoveryv1.EndpointSlice) []ServicePort {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	parse := func(list []string) []net.IP {
		var out []net.IP
		for _, s := range list {
			if ip, ok := ofFamily(family, net.ParseIP(strings.TrimSpace(s))); ok {
				out = append(out, ip)
			}
		}
		return out
	}
	clusterIPs := parse(svc.Spec.ClusterIPs)
	if len(svc.Spec.ClusterIPs) == 0 {
		clusterIPs = parse([]string{svc.Spec.ClusterIP})
	}
	if len(clusterIPs) == 0 {
		return nil
	}
	external := parse(svc.Spec.ExternalIPs)
	var lbIPs []net.IP
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		// ipMode Proxy: the load balancer proxies to the nodes itself;
		// its IP must reach it, so it is not captured here (kube-proxy).
		if ing.IPMode != nil && *ing.IPMode != corev1.LoadBalancerIPModeVIP {
			continue
		}
		lbIPs = append(lbIPs, parse([]string{ing.IP})...)
	}
	external = append(external, lbIPs...)
	var out []ServicePort
	for _, p := range svc.Spec.Ports {
		sp := ServicePort{Namespace: svc.Namespace, Name: svc.Name, PortName: p.Name, Protocol: p.Protocol,
			ClusterIPs: clusterIPs, ExternalIPs: external, LoadBalancerIPs: lbIPs, Port: p.Port, Created: svc.CreationTimestamp.Time}
		if svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
			sp.NodePort = p.NodePort
		}
		if sp.Protocol == "" {
			sp.Protocol = corev1.ProtocolTCP
		}
		sp.AllEndpoints = collectEndpoints(family, p, slices)
		sp.Endpoints = SelectEndpoints(sp.AllEndpoints)
		sp.InternalLocal = svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
		sp.ExternalLocal = svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal &&
			(sp.NodePort > 0 || len(external) > 0)
		sp.HealthCheckNodePort = svc.Spec.HealthCheckNodePort
		if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
			sp.AffinitySeconds = corev1.DefaultClientIPServiceAffinitySeconds
			if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
				sp.AffinitySeconds = *c.ClientIP.TimeoutSeconds
			}
		}
		for _, r := range svc.Spec.LoadBalancerSourceRanges {
			if _, n, err := net.ParseCIDR(strings.TrimSpace(r)); err == nil {
				if _, ok := ofFamily(family, n.IP); ok {
					sp.SourceRanges = append(sp.SourceRanges, n)
				}
			}
		}
		out = append(out, sp)
	}
	return out
}

// collectEndpoints gathers the endpoints of one family's slices for one
// service port (matched by port name and protocol), without duplicates.
func collectEndpoints(family corev1.IPFamily, p corev1.ServicePort, slices []*discoveryv1.EndpointSlice) []Endpoint {
	seen := map[string]int{} // endpoint → its index in eps
	var eps []Endpoint
	addrType := discoveryv1.AddressTypeIPv4
	if family == corev1.IPv6Protocol {
		addrType = discoveryv1.AddressTypeIPv6
	}
	n := 0
	for _, sl := range slices {
		for _, ep := range sl.Endpoints {
			n += len(ep.Addresses)
		}
	}
	// Sized once: kept for every service port, so no growth slack.
	eps = make([]Endpoint, 0, n)
	for _, sl := range slices {
		if sl.AddressType != addrType {
			continue
		}
		var port int32 = -1
		for _, sp := range sl.Ports {
			name := ""
			if sp.Name != nil {
				name = *sp.Name
			}
			proto := corev1.ProtocolTCP
			if sp.Protocol != nil {
				proto = *sp.Protocol
			}
			if name == p.Name && proto == p.Protocol && sp.Port != nil {
				port = *sp.Port
			}
		}
		if port < 0 {
			continue
		}
		for _, ep := range sl.Endpoints {
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			serving := ready
			if ep.Conditions.Serving != nil {
				serving = *ep.Conditions.Serving
			}
			terminating := ep.Conditions.Terminating != nil && *ep.Conditions.Terminating
			node := ""
			if ep.NodeName != nil {
				node = *ep.NodeName
			}
			for _, a := range ep.Addresses {
				ip, ok := ofFamily(family, net.ParseIP(a))
				if !ok {
					continue
				}
				e := Endpoint{IP: ip, Port: port, Ready: ready, Serving: serving, Terminating: terminating, NodeName: node}
				if ep.Hints != nil && len(ep.Hints.ForZones)+len(ep.Hints.ForNodes) > 0 {
					e.Hints = &Hints{}
					for _, z := range ep.Hints.ForZones {
						e.Hints.Zones = append(e.Hints.Zones, z.Name)
					}
					for _, n := range ep.Hints.ForNodes {
						e.Hints.Nodes = append(e.Hints.Nodes, n.Name)
					}
				}
				// An address in two slices (a pod moving between them): a
				// ready copy wins over one that is not, whatever the order,
				// as in kube-proxy.
				if i, dup := seen[e.String()]; dup {
					if e.Ready && !eps[i].Ready {
						eps[i] = e
					}
					continue
				}
				seen[e.String()] = len(eps)
				eps = append(eps, e)
			}
		}
	}
	sort.Slice(eps, func(i, j int) bool { return eps[i].String() < eps[j].String() })
	if len(eps) == 0 {
		return nil
	}
	return eps
}

// SelectEndpoints returns the endpoints traffic may go to: the ready
// ones; when none is ready, the serving ones that are terminating (so
// connections still succeed during a rolling update's tail). Ready is
// taken as the EndpointSlice says, like kube-proxy: the controller already
// clears it for terminating pods, except with publishNotReadyAddresses,
// where a terminating, unready pod stays ready on purpose.
func SelectEndpoints(all []Endpoint) []Endpoint {
	if !slices.ContainsFunc(all, func(e Endpoint) bool { return !e.Ready }) {
		// The usual case: every endpoint ready. Share the slice rather
		// than keep a second copy of every endpoint of every Service.
		return all
	}
	var ready, fallback []Endpoint
	for _, e := range all {
		switch {
		case e.Ready:
			ready = append(ready, e)
		case e.Serving && e.Terminating:
			fallback = append(fallback, e)
		}
	}
	if len(ready) > 0 {
		return ready
	}
	return fallback
}
