// Package dns is weft's cluster DNS: the Kubernetes DNS-based service
// discovery specification (schema 1.1.0) answered from a snapshot of
// Services, EndpointSlices and Pods, with forwarding of other names to
// upstream resolvers through a cache.
//
// records.go is pure: it turns API objects into a Snapshot, a map from
// lower-cased owner name to its records, rebuilt whole on every change and
// swapped atomically, so a query is one map lookup and never takes a lock.
package dns

import (
	"net"
	"sort"
	"strings"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// SchemaVersion is the DNS specification version served as TXT at
// dns-version.<zone>.
const SchemaVersion = "1.1.0"

// Config is what the records depend on besides the API objects.
type Config struct {
	Zone string // e.g. "cluster.local" (with or without the final dot)
	TTL  uint32 // TTL of every record we own
	// NameserverIP is the address published for ns.dns.<zone> (the cluster
	// DNS Service IP).
	NameserverIP net.IP
}

// rrset holds the records of one owner name. Owner names in the answers are
// filled in at query time (with the case the client used).
type rrset struct {
	a, aaaa []net.IP
	srv     []srvTarget
	ptr     []string // targets, FQDN
	cname   string   // ExternalName target, FQDN
	txt     []string
}

type srvTarget struct {
	priority, weight, port uint16
	target                 string // FQDN
}

func (r *rrset) empty() bool {
	return len(r.a)+len(r.aaaa)+len(r.srv)+len(r.ptr)+len(r.txt) == 0 && r.cname == ""
}

// Snapshot is an immutable view of the cluster's records.
type Snapshot struct {
	zone  string // lower case, with the final dot
	ttl   uint32
	names map[string]*rrset // every name that exists, including empty non-terminals
	soa   *dns.SOA
	pods  PodLookup // pod names, answered at query time
}

// NewSnapshot builds the records for the given objects. Objects may come
// straight from informer caches: they are only read. Pod names are looked
// up in pods when asked for (nil: none).
func NewSnapshot(cfg Config, services []*corev1.Service, slices []*discoveryv1.EndpointSlice, pods PodLookup) *Snapshot {
	zone := dns.Fqdn(strings.ToLower(cfg.Zone))
	s := &Snapshot{zone: zone, ttl: cfg.TTL, names: map[string]*rrset{}, pods: pods}
	s.soa = &dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: cfg.TTL},
		Ns: "ns.dns." + zone, Mbox: "hostmaster." + zone, Serial: 1, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: cfg.TTL}

	s.add(zone) // the apex exists (SOA, NS)
	s.add("svc." + zone)
	s.add("pod." + zone)
	s.add("dns-version." + zone).txt = []string{SchemaVersion}
	if cfg.NameserverIP != nil {
		s.addIP(s.add("ns.dns."+zone), cfg.NameserverIP)
	}

	slicesBySvc := map[string][]*discoveryv1.EndpointSlice{}
	for _, es := range slices {
		if svc := es.Labels[discoveryv1.LabelServiceName]; svc != "" {
			k := es.Namespace + "/" + svc
			slicesBySvc[k] = append(slicesBySvc[k], es)
		}
	}
	for _, svc := range services {
		s.addService(svc, slicesBySvc[svc.Namespace+"/"+svc.Name])
	}
	for _, r := range s.names {
		sort.Slice(r.srv, func(i, j int) bool {
			return r.srv[i].target < r.srv[j].target || (r.srv[i].target == r.srv[j].target && r.srv[i].port < r.srv[j].port)
		})
	}
	return s
}

// add returns the rrset of name, creating it and its ancestors up to the
// zone (so that those answer NOERROR, not NXDOMAIN).
func (s *Snapshot) add(name string) *rrset {
	name = strings.ToLower(name)
	r, ok := s.names[name]
	if ok {
		return r
	}
	r = &rrset{}
	s.names[name] = r
	if name != s.zone && !strings.HasSuffix(name, ".arpa.") {
		if i := strings.IndexByte(name, '.'); i >= 0 && i+1 < len(name) {
			s.add(name[i+1:])
		}
	}
	return r
}

func (s *Snapshot) addIP(r *rrset, ip net.IP) {
	if v4 := ip.To4(); v4 != nil {
		for _, x := range r.a {
			if x.Equal(v4) {
				return
			}
		}
		r.a = append(r.a, v4)
		return
	}
	for _, x := range r.aaaa {
		if x.Equal(ip) {
			return
		}
	}
	r.aaaa = append(r.aaaa, ip)
}

func (s *Snapshot) addPTR(ip net.IP, target string) {
	rev, err := dns.ReverseAddr(ip.String())
	if err != nil {
		return
	}
	r := s.add(rev)
	for _, t := range r.ptr {
		if t == target {
			return
		}
	}
	r.ptr = append(r.ptr, target)
}

func (s *Snapshot) addService(svc *corev1.Service, slices []*discoveryv1.EndpointSlice) {
	name := strings.ToLower(svc.Name + "." + svc.Namespace + ".svc." + s.zone)
	switch {
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		if svc.Spec.ExternalName == "" {
			return
		}
		s.add(name).cname = dns.Fqdn(strings.ToLower(svc.Spec.ExternalName))
	case svc.Spec.ClusterIP == corev1.ClusterIPNone:
		s.addHeadless(svc, name, slices)
	default:
		r := s.add(name)
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		for _, str := range ips {
			if ip := net.ParseIP(str); ip != nil {
				s.addIP(r, ip)
				s.addPTR(ip, name)
			}
		}
		for _, p := range svc.Spec.Ports {
			if p.Name == "" {
				continue
			}
			srvSet := s.add(srvName(p.Name, string(p.Protocol), name))
			srvSet.srv = append(srvSet.srv, srvTarget{weight: 100, port: uint16(p.Port), target: name})
		}
	}
}

func srvName(port, proto, svcName string) string {
	return "_" + strings.ToLower(port) + "._" + strings.ToLower(proto) + "." + svcName
}

// addHeadless publishes each ready endpoint (every endpoint if the service
// publishes not-ready addresses; the EndpointSlice controller marks those
// ready already) under the service name and under its own name: its
// hostname, or its address with dashes when it has none.
func (s *Snapshot) addHeadless(svc *corev1.Service, name string, slices []*discoveryv1.EndpointSlice) {
	r := s.add(name)
	type srvKey struct {
		port, proto, target string
		number              int32
	}
	var srvs []srvKey
	for _, es := range slices {
		for _, ep := range es.Endpoints {
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			if !ready && !svc.Spec.PublishNotReadyAddresses {
				continue
			}
			for _, str := range ep.Addresses {
				ip := net.ParseIP(str)
				if ip == nil {
					continue
				}
				label := dashed(ip)
				if ep.Hostname != nil && *ep.Hostname != "" {
					label = *ep.Hostname
				}
				epName := strings.ToLower(label + "." + name)
				s.addIP(r, ip)
				s.addIP(s.add(epName), ip)
				s.addPTR(ip, epName)
				for _, p := range es.Ports {
					if p.Name == nil || *p.Name == "" || p.Port == nil {
						continue
					}
					proto := string(corev1.ProtocolTCP)
					if p.Protocol != nil {
						proto = string(*p.Protocol)
					}
					srvs = append(srvs, srvKey{*p.Name, proto, epName, *p.Port})
				}
			}
		}
	}
	count := map[string]int{}
	for _, k := range srvs {
		count[srvName(k.port, k.proto, name)]++
	}
	for _, k := range srvs {
		owner := srvName(k.port, k.proto, name)
		sr := s.add(owner)
		sr.srv = append(sr.srv, srvTarget{weight: uint16(100 / count[owner]), port: uint16(k.number), target: k.target})
	}
}

// dashed renders an IP as one DNS label: 10.244.1.5 → 10-244-1-5,
// fd00::1 → fd00--1.
func dashed(ip net.IP) string {
	if v4 := ip.To4(); v4 != nil {
		return strings.ReplaceAll(v4.String(), ".", "-")
	}
	return strings.ReplaceAll(ip.String(), ":", "-")
}

// Names returns the number of owner names (for metrics and tests).
func (s *Snapshot) Names() int { return len(s.names) }

// InZone reports whether name is at or under the snapshot's zone.
func (s *Snapshot) InZone(name string) bool {
	name = strings.ToLower(dns.Fqdn(name))
	return name == s.zone || strings.HasSuffix(name, "."+s.zone)
}
