package netpol

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The cluster of these tests: node n1 is the local one.
//
//	default/a app=a 10.244.1.10 n1  ports http=8080/TCP
//	default/b app=b 10.244.1.11 n1  ports http=9090/TCP, dns=53/UDP
//	default/c app=c 10.244.2.10 n2
//	other/x   app=x 10.244.2.20 n2  (namespace team=x)
//	other/y   app=y 10.244.1.30 n1  ports http=7070/TCP
//	host/h    app=h hostNetwork on n2: 198.18.0.2
const (
	ipA, ipB, ipC, ipX, ipY, ipH = "10.244.1.10", "10.244.1.11", "10.244.2.10", "10.244.2.20", "10.244.1.30", "198.18.0.2"
	outside                      = "203.0.113.5"
)

func testPod(ns, name, node, ip string, app string, ports ...corev1.ContainerPort) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app}},
		Spec:   corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Ports: ports}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	if ip != "" {
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	return p
}

func port(name string, n int32, proto corev1.Protocol) corev1.ContainerPort {
	return corev1.ContainerPort{Name: name, ContainerPort: n, Protocol: proto}
}

func testInput() Input {
	h := testPod("host", "h", "n2", ipH, "h")
	h.Spec.HostNetwork = true
	return Input{Node: "n1",
		Namespaces: []*corev1.Namespace{
			{ObjectMeta: metav1.ObjectMeta{Name: "default", Labels: map[string]string{corev1.LabelMetadataName: "default"}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "other", Labels: map[string]string{corev1.LabelMetadataName: "other", "team": "x"}}},
		},
		Pods: []*corev1.Pod{
			testPod("default", "a", "n1", ipA, "a", port("metrics", 9100, corev1.ProtocolTCP), port("http", 8080, corev1.ProtocolTCP)),
			testPod("default", "b", "n1", ipB, "b", port("http", 9090, ""), port("dns", 53, corev1.ProtocolUDP)),
			testPod("default", "c", "n2", ipC, "c"),
			testPod("other", "x", "n2", ipX, "x"),
			testPod("other", "y", "n1", ipY, "y", port("http", 7070, corev1.ProtocolTCP)),
			h,
		}}
}

func sel(app string) *metav1.LabelSelector {
	if app == "" {
		return &metav1.LabelSelector{}
	}
	return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
}

func policy(ns, name, target string, types []networkingv1.PolicyType, in []networkingv1.NetworkPolicyIngressRule, eg []networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: *sel(target), PolicyTypes: types, Ingress: in, Egress: eg}}
}

var (
	ingressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressOnly  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	tcp, udp    = corev1.ProtocolTCP, corev1.ProtocolUDP
	sctp        = corev1.ProtocolSCTP
)

func numPort(proto corev1.Protocol, n int32) networkingv1.NetworkPolicyPort {
	v := intstr.FromInt32(n)
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &v}
}

func namePort(proto corev1.Protocol, name string) networkingv1.NetworkPolicyPort {
	v := intstr.FromString(name)
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &v}
}

func tcpTo(src, dst string, port int) packet {
	return packet{src: src, dst: dst, proto: "tcp", dport: port}
}

type expect struct {
	p     packet
	allow bool
}

func checkAll(t *testing.T, in Input, cases []expect) {
	t.Helper()
	rs := Compile(in)
	tr := tracer{t: t, rs: rs}
	for _, c := range cases {
		got := tr.trace(c.p)
		if got.accept != c.allow {
			t.Errorf("%s %s → %s:%d: allowed=%v, want %v (denied by %q)", c.p.proto, c.p.src, c.p.dst, c.p.dport, got.accept, c.allow, got.denyBy)
		}
	}
}

func TestNoPolicyAllowsAll(t *testing.T) {
	checkAll(t, testInput(), []expect{{tcpTo(ipC, ipA, 80), true}, {tcpTo(ipA, outside, 80), true}})
}

// A direction no local pod is isolated in has no base chain: its packets
// pay nothing in this table. The chain is there as soon as one is.
func TestIdleDirectionsHaveNoHook(t *testing.T) {
	in := testInput()
	hooks := func() (names []string) {
		for _, n := range Compile(in).ChainNames() {
			if n == ChainEgress || n == ChainIngress {
				names = append(names, n)
			}
		}
		return names
	}
	if got := hooks(); len(got) != 0 {
		t.Fatalf("no policy: base chains %v, want none", got)
	}
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "deny", "a", ingressOnly, nil, nil)}
	if got := hooks(); !slices.Equal(got, []string{ChainIngress}) {
		t.Fatalf("ingress policy on a local pod: base chains %v, want [ingress]", got)
	}
	// A policy selecting only pods of other nodes isolates nothing here.
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "deny", "c", egressOnly, nil, nil)}
	if got := hooks(); len(got) != 0 {
		t.Fatalf("policy on another node's pod: base chains %v, want none", got)
	}
}

func TestDefaultDenyIngress(t *testing.T) {
	in := testInput()
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "deny", "", ingressOnly, nil, nil)}
	checkAll(t, in, []expect{
		{tcpTo(ipC, ipA, 80), false},     // from another node
		{tcpTo(ipB, ipA, 80), false},     // from the same node
		{tcpTo(outside, ipB, 80), false}, // from outside
		{tcpTo(ipY, ipA, 80), false},     // from another namespace
		{tcpTo(ipA, ipC, 80), true},      // egress is not isolated
		{tcpTo(ipA, ipY, 80), true},      // other/y is not selected
		{packet{src: ipC, dst: ipA, proto: "udp", dport: 40000, reply: true}, true}, // replies to a
		{packet{src: ipC, dst: ipA, proto: "icmp", related: true}, true},
	})
}

func TestDefaultDenyEgressAllowsDNS(t *testing.T) {
	in := testInput()
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "deny-eg", "", egressOnly, nil,
		[]networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{numPort(udp, 53), numPort(tcp, 53)}}})}
	checkAll(t, in, []expect{
		{tcpTo(ipA, ipC, 80), false},
		{tcpTo(ipA, outside, 443), false},
		{packet{src: ipA, dst: ipX, proto: "udp", dport: 53}, true},
		{tcpTo(ipA, ipX, 53), true},
		{packet{src: ipA, dst: ipX, proto: "udp", dport: 54}, false},
		{tcpTo(ipC, ipA, 80), true}, // ingress is not isolated
		{tcpTo(ipY, ipC, 80), true}, // other namespace
	})
}

func TestPolicyTypesDefault(t *testing.T) {
	in := testInput()
	// No policyTypes and egress rules: isolates both directions; the
	// ingress list is empty, so no ingress is allowed.
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "p", "a", nil, nil,
		[]networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("c")}}}})}
	checkAll(t, in, []expect{
		{tcpTo(ipA, ipC, 80), true},
		{tcpTo(ipA, ipB, 80), false},
		{tcpTo(ipC, ipA, 80), false},
		{tcpTo(ipC, ipB, 80), true},
	})
	// No policyTypes and no egress: ingress only.
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "p", "a", nil, nil, nil)}
	checkAll(t, in, []expect{{tcpTo(ipA, ipC, 80), true}, {tcpTo(ipC, ipA, 80), false}})
}

func TestAllowFromNamespace(t *testing.T) {
	in := testInput()
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "from-x", "", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "x"}}}}}}, nil)}
	checkAll(t, in, []expect{
		{tcpTo(ipX, ipA, 80), true},
		{tcpTo(ipY, ipB, 80), true},
		{tcpTo(ipC, ipA, 80), false}, // its own namespace is not team=x
		{tcpTo(outside, ipA, 80), false},
	})
}

func TestPodAndNamespaceSelectorInOnePeer(t *testing.T) {
	in := testInput()
	xs := &metav1.LabelSelector{MatchLabels: map[string]string{"team": "x"}}
	one := policy("default", "one", "a", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: xs, PodSelector: sel("y")}}}}, nil)
	in.Policies = []*networkingv1.NetworkPolicy{one}
	checkAll(t, in, []expect{{tcpTo(ipY, ipA, 80), true}, {tcpTo(ipX, ipA, 80), false}, {tcpTo(ipB, ipA, 80), false}})
	// As two peers the rule is a union: any pod of team=x, or app=y here.
	two := policy("default", "two", "a", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: xs}, {PodSelector: sel("b")}}}}, nil)
	in.Policies = []*networkingv1.NetworkPolicy{two}
	checkAll(t, in, []expect{{tcpTo(ipY, ipA, 80), true}, {tcpTo(ipX, ipA, 80), true}, {tcpTo(ipB, ipA, 80), true}, {tcpTo(ipC, ipA, 80), false}})
}

func TestIPBlockWithExcept(t *testing.T) {
	in := testInput()
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "blocks", "a", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "203.0.113.0/24", Except: []string{"203.0.113.0/29", "203.0.113.128/25"}}},
			{IPBlock: &networkingv1.IPBlock{CIDR: "10.244.2.0/24"}}}}}, nil)}
	checkAll(t, in, []expect{
		{tcpTo("203.0.113.8", ipA, 80), true},
		{tcpTo("203.0.113.127", ipA, 80), true},
		{tcpTo(outside, ipA, 80), false}, // .5 is in the first except
		{tcpTo("203.0.113.200", ipA, 80), false},
		{tcpTo(ipC, ipA, 80), true},
		{tcpTo(ipB, ipA, 80), false},
	})
}

func TestNamedPortsDifferPerPod(t *testing.T) {
	in := testInput()
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "http", "", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
		Ports: []networkingv1.NetworkPolicyPort{namePort(tcp, "http")}}}, nil)}
	checkAll(t, in, []expect{
		{tcpTo(ipC, ipA, 8080), true},
		{tcpTo(ipC, ipA, 9090), false},
		{tcpTo(ipC, ipA, 9100), false}, // a's other TCP port
		{tcpTo(ipC, ipB, 9090), true},
		{tcpTo(ipC, ipB, 8080), false},
		{packet{src: ipC, dst: ipB, proto: "udp", dport: 9090}, false},
	})
	// Egress to a named port: the destination pod's port.
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "eg-http", "a", egressOnly, nil, []networkingv1.NetworkPolicyEgressRule{{
		Ports: []networkingv1.NetworkPolicyPort{namePort(tcp, "http")}}})}
	checkAll(t, in, []expect{
		{tcpTo(ipA, ipB, 9090), true},
		{tcpTo(ipA, ipY, 7070), true},
		{tcpTo(ipA, ipY, 9090), false},
		{tcpTo(ipA, outside, 9090), false},
	})
	// A named port limited to peers.
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "eg-http-b", "a", egressOnly, nil, []networkingv1.NetworkPolicyEgressRule{{
		To: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("b")}}, Ports: []networkingv1.NetworkPolicyPort{namePort(tcp, "http")}}})}
	checkAll(t, in, []expect{{tcpTo(ipA, ipB, 9090), true}, {tcpTo(ipA, ipY, 7070), false}})
}

func TestEndPortAndProtocols(t *testing.T) {
	in := testInput()
	r := numPort(tcp, 8000)
	end := int32(8010)
	r.EndPort = &end
	all := networkingv1.NetworkPolicyPort{Protocol: &sctp}
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "range", "a", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
		Ports: []networkingv1.NetworkPolicyPort{r, numPort(udp, 5353), all}}}, nil)}
	checkAll(t, in, []expect{
		{tcpTo(ipC, ipA, 8000), true},
		{tcpTo(ipC, ipA, 8010), true},
		{tcpTo(ipC, ipA, 8011), false},
		{tcpTo(ipC, ipA, 7999), false},
		{packet{src: ipC, dst: ipA, proto: "udp", dport: 8005}, false},
		{packet{src: ipC, dst: ipA, proto: "udp", dport: 5353}, true},
		{tcpTo(ipC, ipA, 5353), false},
		{packet{src: ipC, dst: ipA, proto: "sctp", dport: 1234}, true},
		{packet{src: ipC, dst: ipA, proto: "icmp"}, false},
	})
}

func TestUnionOfPolicies(t *testing.T) {
	in := testInput()
	in.Policies = []*networkingv1.NetworkPolicy{
		policy("default", "from-b", "a", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("b")}}}}, nil),
		policy("default", "from-c", "", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("c")}}}}, nil),
	}
	checkAll(t, in, []expect{
		{tcpTo(ipB, ipA, 80), true},
		{tcpTo(ipC, ipA, 80), true},
		{tcpTo(ipC, ipB, 80), true},
		{tcpTo(ipA, ipB, 80), false}, // b is selected only by from-c
		{tcpTo(ipX, ipA, 80), false},
	})
	// A pod selector alone means pods of the policy's namespace.
	in.Policies = []*networkingv1.NetworkPolicy{
		policy("default", "from-y", "a", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("y")}}}}, nil)}
	checkAll(t, in, []expect{{tcpTo(ipY, ipA, 80), false}})
}

func TestOnlyLocalPodsAreJudgedHere(t *testing.T) {
	in := testInput()
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "deny", "", []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}, nil, nil)}
	// default/c lives on n2: its node judges it, this one passes it.
	checkAll(t, in, []expect{{tcpTo(ipX, ipC, 80), true}, {tcpTo(ipC, ipX, 80), true}, {tcpTo(ipX, ipA, 80), false}, {tcpTo(ipA, ipX, 80), false}})
}

func TestHostNetworkPodsAppearAsTheirNode(t *testing.T) {
	in := testInput()
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "from-h", "a", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: sel("h")}}}}, nil),
		// Selecting the host-network pod isolates nothing.
		policy("host", "deny", "", ingressOnly, nil, nil)}
	local := testPod("host", "h1", "n1", "198.18.0.1", "h")
	local.Spec.HostNetwork = true
	in.Pods = append(in.Pods, local)
	checkAll(t, in, []expect{{tcpTo(ipH, ipA, 80), true}, {tcpTo(ipC, ipA, 80), false}, {tcpTo(ipC, "198.18.0.1", 80), true}})
	if len(Compile(in).Maps["ingress4"].Elems) != 1 {
		t.Errorf("want only default/a isolated: %v", Compile(in).Maps["ingress4"].Elems)
	}
}

func TestPendingAddressIsIsolatedBeforeStatus(t *testing.T) {
	in := testInput()
	in.Pods = append(in.Pods, testPod("default", "new", "n1", "", "new"))
	in.Pending = map[string][]netip.Addr{"default/new": {netip.MustParseAddr("10.244.1.99")}}
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "deny", "", ingressOnly, nil, nil)}
	checkAll(t, in, []expect{{tcpTo(ipC, "10.244.1.99", 80), false}})
	// The informer may still hold the pod from before its binding: what
	// weft-cni reported on this node is this node's.
	in.Pods[len(in.Pods)-1].Spec.NodeName = ""
	checkAll(t, in, []expect{{tcpTo(ipC, "10.244.1.99", 80), false}})
}

func TestIPv6(t *testing.T) {
	in := testInput()
	in.Pods = append(in.Pods, testPod("default", "six", "n1", "fd10:244::10", "a"), testPod("default", "peer6", "n2", "fd10:244:1::10", "b"))
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "from-b", "a", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("b")}, {IPBlock: &networkingv1.IPBlock{CIDR: "fd00:203::/64", Except: []string{"fd00:203::/120"}}}}}}, nil)}
	checkAll(t, in, []expect{
		{tcpTo("fd10:244:1::10", "fd10:244::10", 80), true},
		{tcpTo("fd00:203::1:1", "fd10:244::10", 80), true},
		{tcpTo("fd00:203::1", "fd10:244::10", 80), false},
		{tcpTo("fd10:244:2::1", "fd10:244::10", 80), false},
	})
}

func TestBrokenPeerAllowsNothing(t *testing.T) {
	in := testInput()
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "bad", "a", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "not-a-cidr"}},
			{PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Bogus"}}}}}}}, nil)}
	checkAll(t, in, []expect{{tcpTo(ipC, ipA, 80), false}, {tcpTo(outside, ipA, 80), false}})
	if n := len(Compile(in).Problems); n != 2 {
		t.Errorf("want 2 problems reported, got %d: %v", n, Compile(in).Problems)
	}
}

func TestKeepEstablished(t *testing.T) {
	in := testInput()
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "deny", "", ingressOnly, nil, nil)}
	est := tcpTo(ipC, ipA, 80)
	est.established = true
	checkAll(t, in, []expect{{est, false}}) // judged again by default
	in.KeepEstablished = true
	checkAll(t, in, []expect{{est, true}, {tcpTo(ipC, ipA, 80), false}})
}

// Many policies over the same pods share their sets and a pod walks only
// the policies that select it.
func TestCostDoesNotGrowWithPolicies(t *testing.T) {
	in := testInput()
	for i := 0; i < 500; i++ {
		in.Policies = append(in.Policies, policy("default", fmt.Sprintf("p%d", i), "b", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("c")}}}}, nil))
	}
	in.Policies = append(in.Policies, policy("default", "a-only", "a", ingressOnly, nil, nil))
	rs := Compile(in)
	grp := rs.Maps["ingress4"].Elems[ipA]
	if n := len(rs.Chains[grp].Rules); n != 2 {
		t.Errorf("pod a walks %d rules in its group chain, want 2 (its policy, deny)", n)
	}
	if n := len(rs.Sets); n > 3 {
		t.Errorf("%d sets for 500 policies with one selector, want them shared", n)
	}
}

func TestOverlappingPortsMerge(t *testing.T) {
	got := mergePorts([][]string{{"tcp", "80"}, {"udp", "53"}, {"tcp", "80-90"}, {"tcp", "91"}, {"tcp", "100"}, {"tcp", "0-65535"}, {"udp", "54"}})
	want := "[[tcp 0-65535] [udp 53-54]]"
	if fmt.Sprint(got) != want {
		t.Fatalf("got %v, want %s", got, want)
	}
	if got := mergePorts([][]string{{"tcp", "80"}, {"tcp", "82"}}); fmt.Sprint(got) != "[[tcp 80] [tcp 82]]" {
		t.Fatalf("got %v", got)
	}
}

// A reused address belongs to the pod weft-cni gave it to, not to the
// deleted pod whose status still shows it: the new pod gets none of the
// old one's allowances.
func TestReusedAddressIsTheNewPods(t *testing.T) {
	in := testInput()
	in.Pods = append(in.Pods, testPod("default", "new", "n1", "", "new"))
	in.Pending = map[string][]netip.Addr{"default/new": {netip.MustParseAddr(ipB)}} // default/b is being deleted
	in.Policies = []*networkingv1.NetworkPolicy{
		policy("default", "deny", "new", ingressOnly, nil, nil),
		policy("default", "b-open", "b", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{}}, nil),
	}
	checkAll(t, in, []expect{{tcpTo(ipC, ipB, 80), false}})
}

// A flow stamped with the table's generation passes without being judged;
// one stamped by an earlier table is judged again (so a deny written since
// cuts it). Without a generation, or with KeepEstablished, nothing is
// stamped.
func TestGenerationSkipsJudgingOnlyWithinOneTable(t *testing.T) {
	in := testInput()
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "deny", "a", ingressOnly, nil, nil)}
	in.Generation = 0x2a
	flow := func(gen uint32) packet { p := tcpTo(ipC, ipA, 80); p.established, p.gen = true, gen; return p }
	checkAll(t, in, []expect{
		{flow(0x2a), true},  // allowed while this table was in place
		{flow(0x29), false}, // stamped by the table before: judged, denied
		{tcpTo(ipC, ipA, 80), false},
	})
	rs := Compile(in)
	if rs.Chains[ChainRemember] == nil || rs.Chains[ChainRemember].Rules[0].Text() !=
		"ct direction original ct mark and 0xffefffff != 0x0000002a ct mark set ct mark and 0x00100000 or 0x0000002a" {
		t.Fatalf("remember chain: %+v", rs.Chains[ChainRemember])
	}
	for _, keep := range []bool{false, true} {
		in.Generation, in.KeepEstablished = 0, keep
		if keep {
			in.Generation = 0x2a
		}
		for _, name := range Compile(in).ChainNames() {
			for _, r := range Compile(in).Chains[name].Rules {
				if r.Kind == KindCached || r.Kind == KindRemember {
					t.Fatalf("generation %#x, KeepEstablished %v: %s in %s", in.Generation, keep, r.Text(), name)
				}
			}
		}
	}
}

func TestNextGenerationSkipsZeroAndTheDomainBit(t *testing.T) {
	for _, c := range []struct{ in, want uint32 }{
		{1, 2}, {0x000fffff, 0x00200000}, {0xffffffff, 1}, {0xffefffff, 1},
	} {
		if got := NextGeneration(c.in); got != c.want {
			t.Errorf("NextGeneration(%#x) = %#x, want %#x", c.in, got, c.want)
		}
	}
}
