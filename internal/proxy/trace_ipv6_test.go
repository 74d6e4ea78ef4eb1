package proxy

import (
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

// IPv6: a dual-stack node runs a second proxy for the IPv6 family. Node
// "n1" is fd00:198:18:1::11 and runs endpoint fd00:10:244:1::2;
// fd00:10:244:2::2 runs on "n2".
const (
	nodeIP6   = "fd00:198:18:1::11"
	localEP6  = "fd00:10:244:1::2"
	remoteEP6 = "fd00:10:244:2::2"
	podSrc6   = "fd00:10:244:1::50"
	outside6  = "2001:db8::10"
)

func traceCfg6() Config {
	return Config{NodeName: "n1", Zone: "a", Family: corev1.IPv6Protocol,
		ClusterCIDRs: []*net.IPNet{mustCIDR("10.244.0.0/16"), mustCIDR("fd00:10:244::/56")},
		ServiceCIDRs: []*net.IPNet{mustCIDR("10.96.0.0/16"), mustCIDR("fd00:10:96::/112")}}
}

// dualStack is a PreferDualStack service with both ClusterIPs, and one
// EndpointSlice per family (as the EndpointSlice controller writes them).
func dualStack(nodePort int32) (*corev1.Service, []*discoveryv1.EndpointSlice) {
	svc := service("web", "10.96.0.50", 80, nodePort)
	svc.Spec.ClusterIPs = []string{"10.96.0.50", "fd00:10:96::50"}
	svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	v6 := sliceOf(ep(localEP6, true, true, false), ep(remoteEP6, true, true, false))
	v6.AddressType = discoveryv1.AddressTypeIPv6
	v6.Endpoints[0].NodeName, v6.Endpoints[1].NodeName = ptr.To("n1"), ptr.To("n2")
	return svc, []*discoveryv1.EndpointSlice{twoEndpoints(), v6}
}

func TestTraceIPv6ClusterIP(t *testing.T) {
	svc, slices := dualStack(0)
	tr := newTracer(t, Compile(traceCfg6(), ServicePortsFor(corev1.IPv6Protocol, svc, slices)), nodeIP6)
	both := "[" + localEP6 + "]:8080,[" + remoteEP6 + "]:8080"
	if got := keys(tr.targets(packet{podSrc6, "fd00:10:96::50", "tcp", 80}, false, 4)); got != both {
		t.Errorf("pod → IPv6 ClusterIP targets %s, want %s", got, both)
	}
	if r := tr.trace(packet{podSrc6, "fd00:10:96::50", "tcp", 80}, false); r.masq || r.dnat == "" {
		t.Errorf("pod → IPv6 ClusterIP: %+v (DNAT, source kept)", r)
	}
	if r := tr.trace(packet{nodeIP6, "fd00:10:96::50", "tcp", 80}, true); r.dnat == "" || !r.masq {
		t.Errorf("node → IPv6 ClusterIP: %+v (DNAT and masquerade)", r)
	}
	if r := tr.trace(packet{podSrc6, "fd00:10:96::50", "tcp", 81}, false); r.verdict != "reject" {
		t.Errorf("unknown port on an IPv6 ClusterIP: %+v", r)
	}
	if r := tr.trace(packet{podSrc6, "fd00:10:96::99", "tcp", 80}, false); r.verdict != "drop" {
		t.Errorf("unallocated IPv6 service IP: %+v", r)
	}
	// The IPv6 table leaves IPv4 packets alone (the IPv4 proxy has them).
	if r := tr.trace(packet{podSrc, "10.96.0.50", "tcp", 80}, false); r.dnat != "" || r.verdict != "accept" {
		t.Errorf("IPv4 packet in the IPv6 table: %+v", r)
	}
}

func TestTraceIPv6NodePortLocalAndAffinity(t *testing.T) {
	svc, slices := dualStack(30080)
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	tr := newTracer(t, Compile(traceCfg6(), ServicePortsFor(corev1.IPv6Protocol, svc, slices)), nodeIP6)
	r := tr.trace(packet{outside6, nodeIP6, "tcp", 30080}, false)
	if r.dnat != "["+localEP6+"]:8080" || r.masq {
		t.Errorf("IPv6 NodePort, ETP Local, from outside: %+v, want the local endpoint and the client's address kept", r)
	}
	if len(r.updated) != 1 {
		t.Errorf("session affinity did not record the IPv6 client: %+v", r)
	}
	// The same client comes back to the same endpoint whatever the bucket.
	for b := 0; b < 4; b++ {
		tr.bucket = b
		if r := tr.trace(packet{outside6, nodeIP6, "tcp", 30080}, false); r.dnat != "["+localEP6+"]:8080" {
			t.Errorf("bucket %d: affinity lost: %+v", b, r)
		}
	}
	// NodePorts are not served on ::1.
	tr.local["::1"] = true
	if r := tr.trace(packet{"::1", "::1", "tcp", 30080}, true); r.dnat != "" {
		t.Errorf("NodePort on ::1: %+v", r)
	}
}

// Each family's proxy takes only its own addresses: the IPv4 table gets
// no IPv6 element and the IPv6 one no IPv4 element; an IPv4-only
// service has nothing in the IPv6 table.
func TestFamiliesStayApart(t *testing.T) {
	svc, slices := dualStack(30080)
	svc.Spec.ExternalIPs = []string{"198.51.100.7", "2001:db8::7"}
	v4 := Compile(traceCfg(), ServicePortsFor(corev1.IPv4Protocol, svc, slices))
	cfg6 := traceCfg6()
	v6 := Compile(cfg6, ServicePortsFor(corev1.IPv6Protocol, svc, slices))
	for name, m := range map[string]*Ruleset{"ipv4": v4, "ipv6": v6} {
		for _, e := range m.elems {
			for _, f := range append(append([]string{}, e.Key...), e.Value...) {
				ip := net.ParseIP(f)
				if ip == nil {
					continue
				}
				if (ip.To4() != nil) != (name == "ipv4") {
					t.Errorf("%s table holds %s in %s", name, f, e.Set+e.Map)
				}
			}
		}
	}
	if sps := ServicePortsFor(corev1.IPv6Protocol, service("v4only", "10.96.0.9", 80, 0), slices); len(sps) != 0 {
		t.Errorf("IPv4-only service in the IPv6 proxy: %+v", sps)
	}
	if _, err := encodeElements(v6); err != nil {
		t.Errorf("IPv6 elements do not encode for netlink: %v", err)
	}
}
