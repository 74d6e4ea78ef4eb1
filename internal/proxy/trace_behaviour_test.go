package proxy

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

// The behaviours of the service proxy, as verdicts and DNAT targets of
// packets traced through the compiled table. Node "n1" (198.18.1.11) runs
// endpoint 10.244.1.2; 10.244.2.2 runs on "n2".
const (
	nodeIP   = "198.18.1.11"
	localEP  = "10.244.1.2"
	remoteEP = "10.244.2.2"
	podSrc   = "10.244.1.50" // a pod on this node
	outside  = "203.0.113.10"
)

func traceCfg() Config {
	return Config{NodeName: "n1", Zone: "a", ClusterCIDRs: []*net.IPNet{mustCIDR("10.244.0.0/16")},
		ServiceCIDRs: []*net.IPNet{mustCIDR("10.96.0.0/16")}}
}

func twoEndpoints() *discoveryv1.EndpointSlice {
	l, r := ep(localEP, true, true, false), ep(remoteEP, true, true, false)
	l.NodeName, r.NodeName = ptr.To("n1"), ptr.To("n2")
	return sliceOf(l, r)
}

func compileOne(t *testing.T, svc *corev1.Service, slices ...*discoveryv1.EndpointSlice) *tracer {
	t.Helper()
	return newTracer(t, Compile(traceCfg(), ServicePorts(svc, slices)), nodeIP)
}

func keys(m map[string]bool) string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func TestTraceClusterIP(t *testing.T) {
	tr := compileOne(t, service("web", "10.96.0.50", 80, 0), twoEndpoints())
	both := localEP + ":8080," + remoteEP + ":8080"
	// From a pod: DNAT to either endpoint, source kept.
	if got := keys(tr.targets(packet{podSrc, "10.96.0.50", "tcp", 80}, false, 4)); got != both {
		t.Errorf("pod → ClusterIP targets %s, want %s", got, both)
	}
	if r := tr.trace(packet{podSrc, "10.96.0.50", "tcp", 80}, false); r.masq || r.verdict != "accept" {
		t.Errorf("pod → ClusterIP: %+v (must keep the source)", r)
	}
	// From the node itself: DNAT, and masqueraded (the node is outside the pod network).
	if r := tr.trace(packet{nodeIP, "10.96.0.50", "tcp", 80}, true); r.dnat == "" || !r.masq {
		t.Errorf("node → ClusterIP: %+v", r)
	}
	// Wrong protocol or port on a ClusterIP: refused; unallocated service IP: dropped.
	if r := tr.trace(packet{podSrc, "10.96.0.50", "udp", 80}, false); r.verdict != "reject" || r.dnat != "" {
		t.Errorf("unknown protocol on a ClusterIP: %+v", r)
	}
	if r := tr.trace(packet{podSrc, "10.96.0.50", "tcp", 81}, false); r.verdict != "reject" {
		t.Errorf("unknown port on a ClusterIP: %+v", r)
	}
	if r := tr.trace(packet{podSrc, "10.96.9.9", "tcp", 80}, false); r.verdict != "drop" {
		t.Errorf("unallocated service IP: %+v", r)
	}
	// Traffic that is not for a service is left alone.
	if r := tr.trace(packet{podSrc, remoteEP, "tcp", 8080}, false); r.verdict != "accept" || r.dnat != "" || r.masq {
		t.Errorf("pod → pod: %+v", r)
	}
}

func TestTraceNoEndpointsRejects(t *testing.T) {
	svc := service("web", "10.96.0.50", 80, 30080)
	tr := compileOne(t, svc, sliceOf(ep(localEP, false, false, false)))
	if r := tr.trace(packet{podSrc, "10.96.0.50", "tcp", 80}, false); r.verdict != "reject" {
		t.Errorf("ClusterIP without endpoints: %+v", r)
	}
	if r := tr.trace(packet{outside, nodeIP, "tcp", 30080}, false); r.verdict != "reject" {
		t.Errorf("NodePort without endpoints: %+v", r)
	}
}

func TestTraceTerminatingFallback(t *testing.T) {
	// No ready endpoint: serving-terminating ones are used, not the others.
	tr := compileOne(t, service("web", "10.96.0.50", 80, 0), sliceOf(ep(localEP, false, true, true), ep(remoteEP, false, false, true)))
	if got := keys(tr.targets(packet{podSrc, "10.96.0.50", "tcp", 80}, false, 4)); got != localEP+":8080" {
		t.Errorf("terminating fallback targets %s", got)
	}
}

func TestTraceNodePortAndExternalIPs(t *testing.T) {
	svc := service("web", "10.96.0.50", 80, 30080)
	svc.Spec.ExternalIPs = []string{"198.51.100.7"}
	tr := compileOne(t, svc, twoEndpoints())
	for _, p := range []packet{{outside, nodeIP, "tcp", 30080}, {outside, "198.51.100.7", "tcp", 80}} {
		r := tr.trace(p, false)
		if r.dnat == "" || !r.masq {
			t.Errorf("%v (externalTrafficPolicy Cluster): %+v, want DNAT and masquerade", p, r)
		}
	}
	// NodePorts are not served on loopback.
	if r := tr.trace(packet{"127.0.0.1", "127.0.0.1", "tcp", 30080}, true); r.dnat != "" {
		t.Errorf("NodePort on loopback: %+v", r)
	}
}

func TestTraceExternalTrafficPolicyLocal(t *testing.T) {
	svc := service("web", "10.96.0.50", 80, 30080)
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	tr := compileOne(t, svc, twoEndpoints())
	// From outside: only the local endpoint, client source kept.
	if got := keys(tr.targets(packet{outside, nodeIP, "tcp", 30080}, false, 4)); got != localEP+":8080" {
		t.Errorf("ETP Local from outside targets %s", got)
	}
	if r := tr.trace(packet{outside, nodeIP, "tcp", 30080}, false); r.masq {
		t.Errorf("ETP Local masqueraded the client: %+v", r)
	}
	// From a pod: internal traffic, every endpoint.
	if got := keys(tr.targets(packet{podSrc, nodeIP, "tcp", 30080}, false, 4)); got != localEP+":8080,"+remoteEP+":8080" {
		t.Errorf("ETP Local from a pod targets %s", got)
	}
	// From the node itself: short-circuited to every endpoint. Its own
	// address is kept (the upstream ETP-change spec checks the client IP
	// of a host-network client); another local address (a load-balancer
	// IP the node holds) is masqueraded.
	cfg := traceCfg()
	cfg.NodeIPs = []net.IP{net.ParseIP(nodeIP), net.ParseIP("fd00::11")}
	tr3 := newTracer(t, Compile(cfg, ServicePorts(svc, []*discoveryv1.EndpointSlice{twoEndpoints()})), nodeIP, "198.18.9.9")
	if got := keys(tr3.targets(packet{nodeIP, nodeIP, "tcp", 30080}, true, 4)); got != localEP+":8080,"+remoteEP+":8080" {
		t.Errorf("ETP Local from the node targets %s", got)
	}
	if r := tr3.trace(packet{nodeIP, nodeIP, "tcp", 30080}, true); r.masq || r.dnat == "" {
		t.Errorf("ETP Local from the node's own address: %+v (want DNAT, source kept)", r)
	}
	if r := tr3.trace(packet{"198.18.9.9", nodeIP, "tcp", 30080}, true); !r.masq || r.dnat == "" {
		t.Errorf("ETP Local from another local address: %+v (want DNAT and masquerade)", r)
	}
	// Without NodeIPs every local source is masqueraded, as kube-proxy does.
	if r := tr.trace(packet{nodeIP, nodeIP, "tcp", 30080}, true); !r.masq {
		t.Errorf("ETP Local from the node without NodeIPs: %+v (want masquerade)", r)
	}
	// A node without local endpoints drops external traffic.
	tr2 := newTracer(t, Compile(Config{NodeName: "n3", ClusterCIDRs: traceCfg().ClusterCIDRs}, ServicePorts(svc, []*discoveryv1.EndpointSlice{twoEndpoints()})), "198.18.1.13")
	if r := tr2.trace(packet{outside, "198.18.1.13", "tcp", 30080}, false); r.verdict != "drop" {
		t.Errorf("ETP Local without local endpoints: %+v", r)
	}
}

func TestTraceInternalTrafficPolicyLocal(t *testing.T) {
	svc := service("web", "10.96.0.50", 80, 0)
	svc.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
	tr := compileOne(t, svc, twoEndpoints())
	if got := keys(tr.targets(packet{podSrc, "10.96.0.50", "tcp", 80}, false, 4)); got != localEP+":8080" {
		t.Errorf("ITP Local targets %s", got)
	}
	tr2 := newTracer(t, Compile(Config{NodeName: "n3", ClusterCIDRs: traceCfg().ClusterCIDRs}, ServicePorts(svc, []*discoveryv1.EndpointSlice{twoEndpoints()})))
	if r := tr2.trace(packet{"10.244.3.9", "10.96.0.50", "tcp", 80}, false); r.verdict != "drop" {
		t.Errorf("ITP Local on a node without endpoints: %+v", r)
	}
}

func TestTraceSessionAffinity(t *testing.T) {
	svc := service("web", "10.96.0.50", 80, 0)
	svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	tr := compileOne(t, svc, twoEndpoints())
	tr.bucket = 1
	first := tr.trace(packet{podSrc, "10.96.0.50", "tcp", 80}, false)
	if first.dnat == "" || len(first.updated) != 1 {
		t.Fatalf("first connection: %+v", first)
	}
	// Whatever the random pick, the same client goes to the same endpoint.
	for b := 0; b < 4; b++ {
		tr.bucket = b
		if r := tr.trace(packet{podSrc, "10.96.0.50", "tcp", 80}, false); r.dnat != first.dnat {
			t.Errorf("bucket %d: %s, want the remembered %s", b, r.dnat, first.dnat)
		}
	}
	// Other clients are free to go elsewhere: new clients, each on another
	// random pick, reach both endpoints, not only the one podSrc remembers.
	seen := map[string]bool{}
	for b := 0; b < 4; b++ {
		tr.bucket = b
		if r := tr.trace(packet{fmt.Sprintf("10.244.3.%d", 10+b), "10.96.0.50", "tcp", 80}, false); r.dnat != "" {
			seen[r.dnat] = true
		}
	}
	if len(seen) != 2 {
		t.Errorf("new clients reached %v, want both endpoints", seen)
	}
}

func TestTraceHairpinMasqueraded(t *testing.T) {
	tr := compileOne(t, service("web", "10.96.0.50", 80, 0), twoEndpoints())
	for b := 0; b < 2; b++ {
		tr.bucket = b
		r := tr.trace(packet{localEP, "10.96.0.50", "tcp", 80}, false)
		self := r.dnat == localEP+":8080"
		if self != r.masq {
			t.Errorf("endpoint %s reaching %s through the service: masquerade %v (must be exactly for itself)", localEP, r.dnat, r.masq)
		}
	}
}

func TestTraceLoadBalancerSourceRanges(t *testing.T) {
	svc := service("web", "10.96.0.50", 80, 30080)
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc.Spec.LoadBalancerSourceRanges = []string{"203.0.113.0/28"}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.19.100.5"}}
	tr := compileOne(t, svc, twoEndpoints())
	if r := tr.trace(packet{outside, "198.19.100.5", "tcp", 80}, false); r.dnat == "" {
		t.Errorf("allowed source to the LB IP: %+v", r)
	}
	if r := tr.trace(packet{"203.0.113.200", "198.19.100.5", "tcp", 80}, false); r.verdict != "drop" {
		t.Errorf("source outside loadBalancerSourceRanges: %+v", r)
	}
	// As with kube-proxy, the ranges hold for everyone reaching the
	// load-balancer IP, pods and the node included, and only for it: the
	// NodePort of the same service stays open.
	if r := tr.trace(packet{podSrc, "198.19.100.5", "tcp", 80}, false); r.verdict != "drop" {
		t.Errorf("pod outside loadBalancerSourceRanges to the LB IP: %+v", r)
	}
	if r := tr.trace(packet{nodeIP, "198.19.100.5", "tcp", 80}, true); r.verdict != "drop" {
		t.Errorf("node outside loadBalancerSourceRanges to the LB IP: %+v", r)
	}
	if r := tr.trace(packet{"203.0.113.200", nodeIP, "tcp", 30080}, false); r.dnat == "" {
		t.Errorf("NodePort filtered by loadBalancerSourceRanges: %+v", r)
	}
	// A range holding the node's address lets the node in, from its own
	// address and from the load-balancer IP (a node that holds the IP).
	svc.Spec.LoadBalancerSourceRanges = []string{"203.0.113.0/28", "198.18.1.0/24"}
	cfg := traceCfg()
	cfg.NodeIPs = []net.IP{net.ParseIP(nodeIP)}
	tr2 := newTracer(t, Compile(cfg, ServicePorts(svc, []*discoveryv1.EndpointSlice{twoEndpoints()})), nodeIP, "198.19.100.5")
	for _, src := range []string{nodeIP, "198.19.100.5"} {
		if r := tr2.trace(packet{src, "198.19.100.5", "tcp", 80}, true); r.dnat == "" {
			t.Errorf("node (%s) inside loadBalancerSourceRanges to the LB IP: %+v", src, r)
		}
	}
	if r := tr2.trace(packet{podSrc, "198.19.100.5", "tcp", 80}, false); r.verdict != "drop" {
		t.Errorf("pod outside loadBalancerSourceRanges to the LB IP: %+v", r)
	}
}

func TestTraceTopologyPreferSameZone(t *testing.T) {
	svc := service("web", "10.96.0.50", 80, 0)
	svc.Spec.TrafficDistribution = ptr.To(corev1.ServiceTrafficDistributionPreferSameZone)
	sl := twoEndpoints()
	sl.Endpoints[0].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "a"}}}
	sl.Endpoints[1].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "b"}}}
	tr := compileOne(t, svc, sl)
	if got := keys(tr.targets(packet{podSrc, "10.96.0.50", "tcp", 80}, false, 4)); got != localEP+":8080" {
		t.Errorf("PreferSameZone in zone a targets %s", got)
	}
}

// An endpoint's packet that conntrack holds invalid (say out of the TCP
// window) is not un-NATed; forwarded as it is, it would reach the client
// from the endpoint's address and reset the client's connection to the
// service (kubernetes issue 74839). It is dropped, unless conntrack runs
// in liberal mode, where such packets are not invalid in the first place.
func TestTraceInvalidConntrackStateDropped(t *testing.T) {
	reply := packet{remoteEP, podSrc, "tcp", 40000}
	tr := compileOne(t, service("web", "10.96.0.50", 80, 0), twoEndpoints())
	if r := tr.traceInvalid(reply, false); r.verdict != "drop" {
		t.Errorf("invalid forwarded packet: %+v, want drop", r)
	}
	if r := tr.trace(reply, false); r.verdict != "accept" {
		t.Errorf("valid forwarded packet: %+v, want accept", r)
	}
	if r := tr.traceInvalid(packet{remoteEP, nodeIP, "tcp", 40000}, false); r.verdict != "accept" {
		t.Errorf("invalid packet to the node itself is not the proxy's business: %+v", r)
	}
	cfg := traceCfg()
	cfg.TCPBeLiberal = true
	liberal := newTracer(t, Compile(cfg, ServicePorts(service("web", "10.96.0.50", 80, 0), []*discoveryv1.EndpointSlice{twoEndpoints()})), nodeIP)
	if r := liberal.traceInvalid(reply, false); r.verdict != "accept" {
		t.Errorf("liberal mode: invalid forwarded packet %+v, want accept (the sysctl handles it)", r)
	}
}

// NodePorts are served where --nodeport-addresses says: by default on the
// node's own addresses only (kube-proxy's nftables "primary"), not on
// other local addresses such as the VXLAN device's; with CIDRs on the
// local addresses inside them; with 0.0.0.0/0 on every local address.
// Never on loopback. The no-endpoint reject follows the same addresses.
func TestTraceNodePortAddresses(t *testing.T) {
	const vtep = "10.244.1.0" // another local address of the node
	svc := service("web", "10.96.0.50", 80, 30080)
	empty := service("none", "10.96.0.51", 80, 30081)
	for _, c := range []struct {
		name      string
		addresses []string
		served    map[string]bool
	}{
		{"primary", nil, map[string]bool{nodeIP: true, vtep: false, "127.0.0.1": false}},
		{"cidr", []string{"10.244.0.0/16"}, map[string]bool{nodeIP: false, vtep: true, "127.0.0.1": false}},
		{"all", []string{"0.0.0.0/0"}, map[string]bool{nodeIP: true, vtep: true, "127.0.0.1": false}},
		{"other family only", []string{"fd00::/64"}, map[string]bool{nodeIP: false, vtep: false}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := traceCfg()
			cfg.NodeIPs = []net.IP{net.ParseIP(nodeIP)}
			var err error
			if cfg.NodePortAddresses, err = ParseNodePortAddresses(c.addresses); err != nil {
				t.Fatal(err)
			}
			ports := append(ServicePorts(svc, []*discoveryv1.EndpointSlice{twoEndpoints()}), ServicePorts(empty, nil)...)
			tr := newTracer(t, Compile(cfg, ports), nodeIP, vtep)
			for addr, want := range c.served {
				r := tr.trace(packet{outside, addr, "tcp", 30080}, false)
				if got := r.dnat != ""; got != want {
					t.Errorf("NodePort on %s: served %v, want %v (%+v)", addr, got, want, r)
				}
				r = tr.trace(packet{outside, addr, "tcp", 30081}, false)
				if got := r.verdict == "reject"; got != want {
					t.Errorf("NodePort without endpoints on %s: rejected %v, want %v (%+v)", addr, got, want, r)
				}
			}
		})
	}
	// primary on a node without an address of this family: none served.
	cfg := traceCfg()
	cfg.NodeIPs = []net.IP{net.ParseIP("fd00::11"), nil}
	tr := newTracer(t, Compile(cfg, ServicePorts(svc, []*discoveryv1.EndpointSlice{twoEndpoints()})), nodeIP, vtep)
	for _, addr := range []string{nodeIP, vtep} {
		if r := tr.trace(packet{outside, addr, "tcp", 30080}, false); r.dnat != "" {
			t.Errorf("primary, no IPv4 node address: NodePort on %s served (%+v)", addr, r)
		}
	}
	for _, bad := range [][]string{{"primary", "10.0.0.0/8"}, {"10.0.0.0"}} {
		if _, err := ParseNodePortAddresses(bad); err == nil {
			t.Errorf("ParseNodePortAddresses(%q): no error", bad)
		}
	}
}

// A load-balancer IP in ipMode Proxy belongs to a load balancer that
// proxies to the nodes itself: it is not captured (kube-proxy does the
// same), while a VIP-mode one (or one without ipMode) is.
func TestTraceLoadBalancerIPMode(t *testing.T) {
	svc := service("web", "10.96.0.50", 80, 30080)
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
		{IP: "198.19.100.5"},
		{IP: "198.19.100.6", IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)},
		{IP: "198.19.100.7", IPMode: ptr.To(corev1.LoadBalancerIPModeProxy)},
	}
	tr := compileOne(t, svc, twoEndpoints())
	for ip, captured := range map[string]bool{"198.19.100.5": true, "198.19.100.6": true, "198.19.100.7": false} {
		if r := tr.trace(packet{podSrc, ip, "tcp", 80}, false); (r.dnat != "") != captured {
			t.Errorf("%s: %+v, captured want %v", ip, r, captured)
		}
	}
}
