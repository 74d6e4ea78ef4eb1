package bgp

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func node(name, ip, rack string, rr bool) Node {
	l := map[string]string{"topology.kubernetes.io/zone": rack}
	if rr {
		l["route-reflector"] = "true"
	}
	return Node{Name: name, IP: netip.MustParseAddr(ip), Labels: l}
}

var lab = []Node{
	node("n1", "198.18.1.11", "rack-a", true),
	node("n2", "198.18.1.12", "rack-a", false),
	node("n3", "198.18.2.13", "rack-b", false),
}

func rackPeer(name, addr, rack string) Peer {
	return Peer{Name: name, Spec: PeerSpec{PeerAddress: addr, PeerASN: 65000,
		NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"topology.kubernetes.io/zone": rack}}}}
}

func kinds(nb map[netip.Addr]Neighbor) map[string]string {
	out := map[string]string{}
	for a, n := range nb {
		out[a.String()] = n.Kind
	}
	return out
}

func TestPlanNeighborsMeshAndRackPeers(t *testing.T) {
	in := Inputs{Local: lab[1], Nodes: lab, Peers: []Peer{rackPeer("rack-a", "198.18.1.1", "rack-a"), rackPeer("rack-b", "198.18.2.1", "rack-b")}}
	got, problems := PlanNeighbors(in)
	want := map[string]string{"198.18.1.11": KindMesh, "198.18.2.13": KindMesh, "198.18.1.1": KindExternal}
	if len(problems) > 0 || len(got) != len(want) {
		t.Fatalf("got %v, problems %v", kinds(got), problems)
	}
	for a, k := range want {
		if kinds(got)[a] != k {
			t.Errorf("%s: %q, want %q", a, kinds(got)[a], k)
		}
	}
	if got[netip.MustParseAddr("198.18.1.11")].ASN != DefaultASN || got[netip.MustParseAddr("198.18.1.1")].ASN != 65000 {
		t.Errorf("ASNs: %+v", got)
	}
}

func TestPlanNeighborsRouteReflectors(t *testing.T) {
	cfg := Configuration{RouteReflectorSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"route-reflector": "true"}}}
	// The reflector serves every other node as a client.
	rr, _ := PlanNeighbors(Inputs{Local: lab[0], Nodes: lab, Config: cfg})
	if k := kinds(rr); len(k) != 2 || k["198.18.1.12"] != KindClient || k["198.18.2.13"] != KindClient {
		t.Errorf("reflector: %v", k)
	}
	if !rr[netip.MustParseAddr("198.18.2.13")].RRClient {
		t.Error("clients must be marked route-reflector clients")
	}
	// A client peers with the reflector only, not with the other client.
	cl, _ := PlanNeighbors(Inputs{Local: lab[2], Nodes: lab, Config: cfg})
	if k := kinds(cl); len(k) != 1 || k["198.18.1.11"] != KindReflector {
		t.Errorf("client: %v", k)
	}
	// Mesh off, no reflectors: no node sessions at all.
	off := false
	none, _ := PlanNeighbors(Inputs{Local: lab[2], Nodes: lab, Config: Configuration{NodeToNodeMesh: &off}})
	if len(none) != 0 {
		t.Errorf("mesh off: %v", kinds(none))
	}
}

// A bad BGPPeer is reported and the other sessions are planned as before.
func TestPlanNeighborsBadPeerHurtsNobody(t *testing.T) {
	bad := []Peer{
		{Name: "not-ip", Spec: PeerSpec{PeerAddress: "router.example", PeerASN: 65000}},
		{Name: "asn-zero", Spec: PeerSpec{PeerAddress: "198.18.9.1", PeerASN: 0}},
		{Name: "is-a-node", Spec: PeerSpec{PeerAddress: "198.18.1.11", PeerASN: 65000}},
		{Name: "loopback", Spec: PeerSpec{PeerAddress: "127.0.0.1", PeerASN: 65000}},
		{Name: "dup", Spec: PeerSpec{PeerAddress: "198.18.1.1", PeerASN: 65001}},
		{Name: "no-secret", Spec: PeerSpec{PeerAddress: "198.18.1.2", PeerASN: 65000, PasswordSecretRef: &SecretKeyRef{Name: "s", Key: "k"}}},
		{Name: "bad-hold", Spec: PeerSpec{PeerAddress: "198.18.1.3", PeerASN: 65000, HoldTimeSeconds: 1}},
		{Name: "bad-selector", Spec: PeerSpec{PeerAddress: "198.18.1.4", PeerASN: 65000,
			NodeSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: "Bogus"}}}}},
	}
	in := Inputs{Local: lab[1], Nodes: lab, Peers: append([]Peer{rackPeer("a-rack", "198.18.1.1", "rack-a")}, bad...)}
	got, problems := PlanNeighbors(in)
	if k := kinds(got); len(k) != 3 || k["198.18.1.1"] != KindExternal {
		t.Errorf("sessions: %v", k)
	}
	reported := map[string]bool{}
	for _, p := range problems {
		reported[p.Peer] = true
	}
	for _, p := range bad {
		if !reported[p.Name] {
			t.Errorf("%s not reported (problems %v)", p.Name, problems)
		}
	}
}

func TestPlanNeighborsPassword(t *testing.T) {
	p := rackPeer("rack-a", "198.18.1.1", "rack-a")
	p.Spec.PasswordSecretRef = &SecretKeyRef{Name: "bgp", Key: "password"}
	got, problems := PlanNeighbors(Inputs{Local: lab[1], Nodes: lab, Peers: []Peer{p}, Passwords: map[string]string{"rack-a": "s3cret"}})
	if len(problems) > 0 || got[netip.MustParseAddr("198.18.1.1")].Password != "s3cret" {
		t.Errorf("got %+v, %v", got, problems)
	}
}

func svc(name string, typ corev1.ServiceType, etp corev1.ServiceExternalTrafficPolicy, lb []string, ext []string, ann string) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Annotations: map[string]string{AnnotationCommunities: ann}},
		Spec: corev1.ServiceSpec{Type: typ, ExternalTrafficPolicy: etp, ExternalIPs: ext, ClusterIPs: []string{"10.96.0.50"}}}
	for _, ip := range lb {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	return s
}

func TestPlanAnnouncements(t *testing.T) {
	local := Node{Name: "n1", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}
	allowed := ServiceAddresses{LoadBalancerIPs: []netip.Prefix{netip.MustParsePrefix("198.19.100.0/24")},
		ExternalIPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	svcs := []*corev1.Service{
		svc("lb", corev1.ServiceTypeLoadBalancer, corev1.ServiceExternalTrafficPolicyCluster, []string{"198.19.100.1"}, nil, "65000:100, 65000:200"),
		svc("local-here", corev1.ServiceTypeLoadBalancer, corev1.ServiceExternalTrafficPolicyLocal, []string{"198.19.100.2"}, nil, ""),
		svc("local-elsewhere", corev1.ServiceTypeLoadBalancer, corev1.ServiceExternalTrafficPolicyLocal, []string{"198.19.100.3"}, nil, ""),
		svc("ext", corev1.ServiceTypeClusterIP, "", nil, []string{"192.0.2.7"}, ""),
		// A tenant's externalIP outside the operator's ranges: never announced.
		svc("hijack", corev1.ServiceTypeClusterIP, "", nil, []string{"8.8.8.8"}, ""),
		svc("lb-outside-pool", corev1.ServiceTypeLoadBalancer, corev1.ServiceExternalTrafficPolicyCluster, []string{"203.0.113.9"}, nil, ""),
		svc("bad-communities", corev1.ServiceTypeLoadBalancer, corev1.ServiceExternalTrafficPolicyCluster, []string{"198.19.100.4"}, nil, "65000:70000"),
	}
	hasLocal := func(ns, name string) bool { return name == "local-here" }
	got, problems := PlanAnnouncements(local, svcs, allowed, hasLocal)
	var lines []string
	for _, a := range got {
		lines = append(lines, a.Key())
	}
	want := "10.244.1.0/24|[] 192.0.2.7/32|[] 198.19.100.1/32|[4259840100 4259840200] 198.19.100.2/32|[] 198.19.100.4/32|[]"
	if strings.Join(lines, " ") != want {
		t.Errorf("announcements\n got %s\nwant %s", strings.Join(lines, " "), want)
	}
	if len(problems) != 1 || !strings.Contains(problems[0].Error(), "bad-communities") {
		t.Errorf("problems: %v", problems)
	}
	// Cluster IPs only when asked.
	allowed.AnnounceCluster = true
	got, _ = PlanAnnouncements(local, svcs[:1], allowed, hasLocal)
	if len(got) != 3 || got[0].Prefix.String() != "10.244.1.0/24" || got[1].Prefix.String() != "10.96.0.50/32" {
		t.Errorf("with cluster IPs: %v", got)
	}
}

func TestInstallable(t *testing.T) {
	reserved := []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("198.18.1.0/24")}
	for pfx, want := range map[string]bool{
		"10.244.2.0/24": true, "198.19.100.1/32": true,
		"0.0.0.0/0": false, "::/0": false, "10.244.0.0/16": false, "10.244.1.0/25": false, "10.96.0.10/32": false, "198.18.0.0/15": false,
	} {
		if ok, why := Installable(netip.MustParsePrefix(pfx), reserved); ok != want {
			t.Errorf("%s: %v (%s), want %v", pfx, ok, why, want)
		}
	}
}

func TestParseCommunities(t *testing.T) {
	for in, ok := range map[string]bool{"": true, "65000:1": true, "1:2,3:4": true, "65536:1": false, "a:b": false, "1": false, "1:2:3": false, "-1:2": false} {
		if _, err := ParseCommunities(in); (err == nil) != ok {
			t.Errorf("%q: err %v", in, err)
		}
	}
}
