package proxy

import (
	"maps"
	"net"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// SetNodeAddresses gives the addresses of every node (what each is, e.g.
// "node weft-node-1"): no Service may take them as an external address. A
// change forces a full sync.
func (p *Proxy) SetNodeAddresses(addrs map[string]string) {
	p.mu.Lock()
	if maps.Equal(p.nodeAddrs, addrs) {
		p.mu.Unlock()
		return
	}
	p.nodeAddrs = maps.Clone(addrs)
	p.mu.Unlock()
	p.dirty()
}

// NodeAddresses lists the InternalIP and ExternalIP addresses of nodes.
func NodeAddresses(nodes []*corev1.Node) map[string]string {
	out := map[string]string{}
	for _, n := range nodes {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
				if ip := net.ParseIP(a.Address); ip != nil {
					out[ip.String()] = "node " + n.Name
				}
			}
		}
	}
	return out
}

// currentGuard builds the guard from the configuration, the node addresses
// and the API server's endpoints (the default/kubernetes Service).
func (p *Proxy) currentGuard() AddressGuard {
	g := AddressGuard{Reserved: map[string]string{}, AllowExternal: p.cfg.ExternalIPCIDRs,
		Forbidden: append(append([]*net.IPNet{}, p.cfg.ClusterCIDRs...), p.cfg.ServiceCIDRs...)}
	p.mu.Lock()
	maps.Copy(g.Reserved, p.nodeAddrs)
	p.mu.Unlock()
	if objs, err := p.sliceIndex.ByIndex(sliceServiceIndex, "default/kubernetes"); err == nil {
		for _, o := range objs {
			for _, e := range o.(*discoveryv1.EndpointSlice).Endpoints {
				for _, a := range e.Addresses {
					if ip := net.ParseIP(a); ip != nil {
						g.Reserved[ip.String()] = "an API server endpoint"
					}
				}
			}
		}
	}
	return g
}

// admit drops the external addresses key's ports may not take, and reports
// a change in what was refused: a Warning Event on the Service and a log
// line, once per change, never per sync.
func (p *Proxy) admit(key string, svc *corev1.Service, ports []ServicePort) []ServicePort {
	ports, refused := p.guard.Admit(ports)
	var reasons []string
	for _, r := range refused {
		reasons = append(reasons, r.Reason)
	}
	msg := strings.Join(reasons, "; ")
	if p.refused[key] == msg {
		return ports
	}
	if msg == "" {
		delete(p.refused, key)
	} else {
		p.refused[key] = msg
		p.log.Warn("external addresses refused", "service", key, "reasons", msg)
		if p.Recorder != nil && svc != nil {
			p.Recorder.Event(svc, corev1.EventTypeWarning, "ExternalAddressRefused", msg)
		}
	}
	p.refusedGauge.Set(float64(len(p.refused)))
	return ports
}

// reportConflicts tells each Service that lost an external address to an
// older one: a Warning Event and a log line, once per change.
func (p *Proxy) reportConflicts() {
	for key, msg := range p.state.conflicts {
		if p.conflicts[key] == msg {
			continue
		}
		p.conflicts[key] = msg
		p.log.Warn("external address held by another Service", "service", key, "conflict", msg)
		ns, name, _ := strings.Cut(key, "/")
		if svc, err := p.services.Services(ns).Get(name); err == nil && p.Recorder != nil {
			p.Recorder.Event(svc, corev1.EventTypeWarning, "ExternalAddressConflict", msg)
		}
	}
	for key := range p.conflicts {
		if _, ok := p.state.conflicts[key]; !ok {
			delete(p.conflicts, key)
		}
	}
}
