package proxy

import (
	"context"
	"net"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/knftables"
)

func ep(ip string, ready, serving, term bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{
		Ready: ptr.To(ready), Serving: ptr.To(serving), Terminating: ptr.To(term)}}
}

func sliceOf(eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv4,
		Ports:     []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints: eps}
}

func TestSelectEndpoints(t *testing.T) {
	svc := service("s", "10.96.0.9", 80, 0)
	cases := []struct {
		name string
		eps  []discoveryv1.Endpoint
		want string
	}{
		{"ready only", []discoveryv1.Endpoint{ep("10.0.0.1", true, true, false), ep("10.0.0.2", false, false, false)}, "10.0.0.1:8080"},
		{"terminating serving fallback", []discoveryv1.Endpoint{ep("10.0.0.1", false, true, true), ep("10.0.0.2", false, false, true)}, "10.0.0.1:8080"},
		{"ready wins over terminating", []discoveryv1.Endpoint{ep("10.0.0.1", false, true, true), ep("10.0.0.2", true, true, false)}, "10.0.0.2:8080"},
		{"none", []discoveryv1.Endpoint{ep("10.0.0.1", false, false, false)}, ""},
		// The same address in two slices, ready in one only: it is ready,
		// whichever slice comes first.
		{"duplicate, ready second", []discoveryv1.Endpoint{ep("10.0.0.1", false, false, false), ep("10.0.0.1", true, true, false)}, "10.0.0.1:8080"},
		{"duplicate, ready first", []discoveryv1.Endpoint{ep("10.0.0.1", true, true, false), ep("10.0.0.1", false, false, false)}, "10.0.0.1:8080"},
	}
	for _, c := range cases {
		// One slice per endpoint: duplicates come from different slices.
		var slices []*discoveryv1.EndpointSlice
		for _, e := range c.eps {
			slices = append(slices, sliceOf(e))
		}
		sps := ServicePorts(svc, slices)
		var got []string
		for _, e := range sps[0].Endpoints {
			got = append(got, e.String())
		}
		if strings.Join(got, ",") != c.want {
			t.Errorf("%s: got %v, want %s", c.name, got, c.want)
		}
	}
}

func TestServicePortsSkipsHeadlessAndExternalName(t *testing.T) {
	headless := service("h", "None", 80, 0)
	headless.Spec.ClusterIPs = []string{"None"}
	ext := service("e", "", 80, 0)
	ext.Spec.Type = corev1.ServiceTypeExternalName
	if len(ServicePorts(headless, nil)) != 0 || len(ServicePorts(ext, nil)) != 0 {
		t.Fatal("headless or ExternalName service got proxy state")
	}
	// A slice port of another protocol does not match.
	udp := sliceOf(ep("10.0.0.1", true, true, false))
	udp.Ports[0].Protocol = ptr.To(corev1.ProtocolUDP)
	if sps := ServicePorts(service("s", "10.96.0.9", 80, 0), []*discoveryv1.EndpointSlice{udp}); len(sps[0].Endpoints) != 0 {
		t.Fatalf("UDP endpoint used for a TCP port: %v", sps[0].Endpoints)
	}
}

func TestBuildMaps(t *testing.T) {
	fake := knftables.NewFake(knftables.InetFamily, TableName)
	svc := service("web", "10.96.0.50", 80, 30080)
	svc.Spec.ExternalIPs = []string{"203.0.113.50"}
	ports := ServicePorts(svc, []*discoveryv1.EndpointSlice{sliceOf(ep("10.244.1.2", true, true, false), ep("10.244.2.2", true, true, false))})
	ports = append(ports, ServicePorts(service("empty", "10.96.0.51", 80, 0), nil)...)
	sticky := service("sticky", "10.96.0.52", 80, 0)
	sticky.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	ports = append(ports, ServicePorts(sticky, []*discoveryv1.EndpointSlice{sliceOf(ep("10.244.1.3", true, true, false), ep("10.244.2.3", true, true, false))})...)
	tx := fake.NewTransaction()
	Compile(Config{ClusterCIDRs: []*net.IPNet{mustCIDR("10.244.0.0/16")}}, ports).Full(tx)
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	dump := fake.Dump()
	for _, want := range []string{
		// Plain services: entry points to shared chains, buckets to endpoints.
		"10.96.0.50 . tcp . 80 : goto dnat-ip-2",
		"203.0.113.50 . tcp . 80 : goto ext-ip-2",
		"tcp . 30080 : goto ext-np-2",
		"service-endpoints-1 { 10.96.0.50 . tcp . 80 : 10.244.2.2 . 8080 }",
		"service-endpoints-0 { 203.0.113.50 . tcp . 80 : 10.244.1.2 . 8080 }",
		"nodeport-endpoints-1 { tcp . 30080 : 10.244.2.2 . 8080 }",
		"dnat-ip-2 numgen random mod 2 vmap { 0 : goto pick-ip-0 , 1 : goto pick-ip-1 }",
		"pick-ip-1 dnat ip addr . port to ip daddr . meta l4proto . th dport map @service-endpoints-1",
		"ext-np-2 jump mark-for-masquerade",
		"10.96.0.51 . tcp . 80 : goto reject-chain",
		// Session affinity keeps its own chains.
		"10.96.0.52 . tcp . 80 : goto svc-",
		"numgen random mod 2 vmap { 0 : goto ep-",
		"hairpin-pairs { 10.244.1.2 . 10.244.1.2 }",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("table lacks %q:\n%s", want, dump)
		}
	}
}

func TestFindStaleUDP(t *testing.T) {
	mk := func(eps ...string) ServicePort {
		sp := ServicePort{Namespace: "ns", Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, ClusterIPs: []net.IP{net.ParseIP("10.96.0.10")}}
		for _, e := range eps {
			sp.Endpoints = append(sp.Endpoints, Endpoint{IP: net.ParseIP(e), Port: 53})
		}
		return sp
	}
	got := FindStaleUDP([]ServicePort{mk("10.0.0.1", "10.0.0.2")}, []ServicePort{mk("10.0.0.2")})
	if len(got) != 1 || got[0].Endpoint.String() != "10.0.0.1" {
		t.Fatalf("endpoint removed: %+v", got)
	}
	got = FindStaleUDP([]ServicePort{mk()}, []ServicePort{mk("10.0.0.2")})
	if len(got) != 1 || got[0].Endpoint != nil {
		t.Fatalf("service got endpoints: %+v", got)
	}
	if got := FindStaleUDP([]ServicePort{mk("10.0.0.1")}, []ServicePort{mk("10.0.0.1")}); len(got) != 0 {
		t.Fatalf("no change: %+v", got)
	}
	// internalTrafficPolicy Local falling back to a local terminating
	// endpoint: not among the selected endpoints (others are ready
	// elsewhere), yet traffic went to it. When it is gone, its entries go.
	terminating := mk("10.0.0.2")
	terminating.AllEndpoints = []Endpoint{{IP: net.ParseIP("10.0.0.1"), Port: 53, Serving: true, Terminating: true},
		{IP: net.ParseIP("10.0.0.2"), Port: 53, Ready: true, Serving: true}}
	gone := mk("10.0.0.2")
	gone.AllEndpoints = terminating.AllEndpoints[1:]
	got = FindStaleUDP([]ServicePort{terminating}, []ServicePort{gone})
	if len(got) != 1 || got[0].Endpoint.String() != "10.0.0.1" {
		t.Fatalf("local terminating endpoint removed: %+v", got)
	}
	// Still serving while terminating: its entries stay.
	if got := FindStaleUDP([]ServicePort{terminating}, []ServicePort{terminating}); len(got) != 0 {
		t.Fatalf("terminating endpoint still serving: %+v", got)
	}
}

func TestTopologyEndpoints(t *testing.T) {
	e := func(ip, node, zone string, hints bool) Endpoint {
		x := Endpoint{IP: net.ParseIP(ip), Port: 80, Ready: true, NodeName: node}
		if hints {
			x.Hints = &Hints{Zones: []string{zone}, Nodes: []string{node}}
		}
		return x
	}
	sp := ServicePort{Endpoints: []Endpoint{e("10.0.0.1", "n1", "a", true), e("10.0.0.2", "n2", "a", true), e("10.0.0.3", "n3", "b", true)}}
	str := func(eps []Endpoint) string {
		var s []string
		for _, x := range eps {
			s = append(s, x.IP.String())
		}
		return strings.Join(s, ",")
	}
	if got := str(sp.TopologyEndpoints("n2", "a")); got != "10.0.0.2" {
		t.Errorf("same node: %s", got)
	}
	if got := str(sp.TopologyEndpoints("n9", "b")); got != "10.0.0.3" {
		t.Errorf("same zone: %s", got)
	}
	if got := str(sp.TopologyEndpoints("n9", "c")); got != "10.0.0.1,10.0.0.2,10.0.0.3" {
		t.Errorf("no match falls back to all: %s", got)
	}
	// Node hints count only when every ready endpoint has them; zone
	// hints are still used.
	sp.Endpoints[1].Hints = &Hints{Zones: sp.Endpoints[1].Hints.Zones}
	if got := str(sp.TopologyEndpoints("n1", "a")); got != "10.0.0.1,10.0.0.2" {
		t.Errorf("an endpoint without a node hint: want the zone's endpoints, got %s", got)
	}
	sp.Endpoints[1].Hints = nil
	if got := str(sp.TopologyEndpoints("n1", "a")); got != "10.0.0.1,10.0.0.2,10.0.0.3" {
		t.Errorf("an endpoint without hints disables them: %s", got)
	}
	// An unready endpoint without hints does not count.
	sp.Endpoints[1].Ready = false
	if got := str(sp.TopologyEndpoints("n1", "a")); got != "10.0.0.1" {
		t.Errorf("unready endpoint without hints: %s", got)
	}
	// Serving-terminating stand-ins (none ready): hints are not used.
	term := ServicePort{Endpoints: []Endpoint{e("10.0.0.1", "n1", "a", true), e("10.0.0.3", "n3", "b", true)}}
	for i := range term.Endpoints {
		term.Endpoints[i].Ready, term.Endpoints[i].Serving, term.Endpoints[i].Terminating = false, true, true
	}
	if got := str(term.TopologyEndpoints("n1", "a")); got != "10.0.0.1,10.0.0.3" {
		t.Errorf("terminating fallback: %s", got)
	}
}

// With publishNotReadyAddresses the EndpointSlice controller keeps a
// terminating, unready pod Ready: traffic still goes to it (kube-proxy
// takes Ready as given).
func TestSelectEndpointsPublishNotReadyTerminating(t *testing.T) {
	e := Endpoint{IP: net.ParseIP("10.244.1.2"), Port: 80, Ready: true, Serving: false, Terminating: true}
	if got := SelectEndpoints([]Endpoint{e}); len(got) != 1 {
		t.Fatalf("ready terminating endpoint not used: %v", got)
	}
	e.Ready = false // without publishNotReadyAddresses, and not serving: unusable
	if got := SelectEndpoints([]Endpoint{e}); len(got) != 0 {
		t.Fatalf("unready, non-serving endpoint used: %v", got)
	}
}
