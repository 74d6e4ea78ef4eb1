package netpol

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/knftables"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"

	"weft.dev/weft/internal/testutil"
)

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v %s", args, err, out)
	}
}

// lab is a node namespace routing between two pod namespaces: default/a
// (10.244.1.10, local to the node) and default/c (10.244.2.10, standing
// in for a pod behind another node).
type lab struct {
	node, a, c ns.NetNS
	nft        knftables.Interface
}

func newLab(t *testing.T) *lab {
	testutil.RequireRoot(t)
	l := &lab{node: testutil.NewNetNS(t), a: testutil.NewNetNS(t), c: testutil.NewNetNS(t)}
	node := filepath.Base(l.node.Path())
	for _, p := range []struct {
		n    ns.NetNS
		ip   string
		host string
		gw   string
	}{{l.a, ipA, "weft-pa", "10.244.1.1"}, {l.c, ipC, "weft-pc", "10.244.2.1"}} {
		pod := filepath.Base(p.n.Path())
		sh(t, "ip", "-n", node, "link", "add", p.host, "type", "veth", "peer", "name", "eth0", "netns", pod)
		sh(t, "ip", "-n", node, "addr", "add", p.gw+"/32", "dev", p.host)
		sh(t, "ip", "-n", node, "link", "set", p.host, "up")
		sh(t, "ip", "-n", node, "route", "add", p.ip+"/32", "dev", p.host)
		sh(t, "ip", "-n", pod, "addr", "add", p.ip+"/32", "dev", "eth0")
		sh(t, "ip", "-n", pod, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", pod, "route", "add", p.gw, "dev", "eth0")
		sh(t, "ip", "-n", pod, "route", "add", "default", "via", p.gw)
	}
	sh(t, "ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	var err error
	if err = l.node.Do(func(ns.NetNS) error {
		l.nft, err = knftables.New(knftables.InetFamily, TableName)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *lab) apply(t *testing.T, in Input) {
	t.Helper()
	tx := l.nft.NewTransaction()
	rs := Compile(in)
	Write(tx, rs)
	if err := l.node.Do(func(ns.NetNS) error { return l.nft.Run(context.Background(), tx) }); err != nil {
		t.Fatalf("write table: %v", err)
	}
}

// serve listens on a's port and echoes lines.
func (l *lab) serve(t *testing.T, port int) {
	t.Helper()
	var ln net.Listener
	if err := l.a.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", ipA, port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(conn, conn); conn.Close() }()
		}
	}()
}

// dial connects from c to a's port.
func (l *lab) dial(t *testing.T, port int) (net.Conn, error) {
	t.Helper()
	var conn net.Conn
	err := l.c.Do(func(ns.NetNS) error {
		var err error
		conn, err = net.DialTimeout("tcp", fmt.Sprintf("%s:%d", ipA, port), 500*time.Millisecond)
		return err
	})
	return conn, err
}

func echoes(conn net.Conn) bool {
	_ = conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		return false
	}
	buf := make([]byte, 5)
	_, err := io.ReadFull(conn, buf)
	return err == nil
}

// The compiled table is accepted by the kernel and judges real packets:
// allowed port open, other port closed, an open connection cut when a
// deny arrives, kept with KeepEstablished.
func TestPrivilegedPolicyJudgesRealPackets(t *testing.T) {
	l := newLab(t)
	l.serve(t, 8080)
	l.serve(t, 9000)
	in := testInput()
	allow := policy("default", "allow-c-8080", "a", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("c")}}, Ports: []networkingv1.NetworkPolicyPort{numPort(tcp, 8080)}}}, nil)
	in.Policies = []*networkingv1.NetworkPolicy{allow}
	l.apply(t, in)
	conn, err := l.dial(t, 8080)
	if err != nil {
		t.Fatalf("allowed port: %v", err)
	}
	defer conn.Close()
	if !echoes(conn) {
		t.Fatal("allowed connection does not echo")
	}
	if c, err := l.dial(t, 9000); err == nil {
		c.Close()
		t.Fatal("port 9000 reached though no policy allows it")
	}
	// A deny (allow nothing) on a's open connection cuts it.
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "deny", "a", ingressOnly, nil, nil)}
	l.apply(t, in)
	if echoes(conn) {
		t.Fatal("established connection still echoes after the deny")
	}
	// With KeepEstablished a connection opened before the deny lives on.
	in.Policies, in.KeepEstablished = []*networkingv1.NetworkPolicy{allow}, true
	l.apply(t, in)
	kept, err := l.dial(t, 8080)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "deny", "a", ingressOnly, nil, nil)}
	l.apply(t, in)
	if !echoes(kept) {
		t.Fatal("KeepEstablished: established connection cut")
	}
}

// Every rule form of the unit tests is valid nft: all their policies at once.
func TestPrivilegedEveryRuleFormLoads(t *testing.T) {
	l := newLab(t)
	in := testInput()
	for _, pols := range [][]*networkingv1.NetworkPolicy{allTestPolicies()} {
		in.Policies = pols
		l.apply(t, in)
	}
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(l.node.Path()), "nft", "list", "table", "inet", TableName).CombinedOutput()
	if err != nil {
		t.Fatal(err, string(out))
	}
	for _, want := range []string{"meta l4proto . th dport @ports-", "ip daddr . meta l4proto . th dport @named4-", "ip saddr @cidr4-", "ip6 saddr @cidr6-", `log prefix "ingress" group 2701`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func allTestPolicies() []*networkingv1.NetworkPolicy {
	r := numPort(tcp, 8000)
	end := int32(8010)
	r.EndPort = &end
	return []*networkingv1.NetworkPolicy{
		policy("default", "blocks", "a", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "203.0.113.0/24", Except: []string{"203.0.113.0/29"}}},
				{IPBlock: &networkingv1.IPBlock{CIDR: "fd00:203::/64", Except: []string{"fd00:203::/120"}}}, {PodSelector: sel("c")}},
			Ports: []networkingv1.NetworkPolicyPort{r, numPort(udp, 53), {Protocol: &sctp}, namePort(tcp, "http")}}}, nil),
		policy("default", "eg", "", egressOnly, nil, []networkingv1.NetworkPolicyEgressRule{
			{Ports: []networkingv1.NetworkPolicyPort{namePort(tcp, "http")}},
			{To: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("b")}}},
			{}}),
	}
}

// A denied packet reaches the agent through nflog with its direction,
// addresses and ports, and, when a cluster policy's Deny dropped it, that
// policy's tier and name.
func TestPrivilegedDenialsAreReported(t *testing.T) {
	fromC := []cnp.ClusterNetworkPolicyIngressPeer{{Pods: &cnp.NamespacedPod{PodSelector: *sel("c")}}}
	for _, c := range []struct {
		name         string
		np           []*networkingv1.NetworkPolicy
		cnp          []*cnp.ClusterNetworkPolicy
		tier, policy string
	}{
		{name: "NetworkPolicy", np: []*networkingv1.NetworkPolicy{policy("default", "deny", "a", ingressOnly, nil, nil)}},
		{name: "ClusterNetworkPolicy", tier: "admin", policy: "no-9000", cnp: []*cnp.ClusterNetworkPolicy{clusterPolicy("no-9000", cnp.AdminTier, 2, "default",
			[]cnp.ClusterNetworkPolicyIngressRule{{Action: deny, From: fromC, Protocols: []cnp.ClusterNetworkPolicyProtocol{tcpPort(9000)}}}, nil)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := newLab(t)
			in := testInput()
			in.Policies, in.ClusterPolicies = c.np, c.cnp
			l.apply(t, in)
			d := firstDenial(t, l, 9000)
			if d.Direction != "ingress" || d.Proto != "tcp" || d.Src.Addr().String() != ipC || d.Dst.String() != ipA+":9000" ||
				d.Tier != c.tier || d.Policy != c.policy {
				t.Fatalf("report %+v, want ingress tcp %s → %s:9000 decided by %q %q", d, ipC, ipA, c.tier, c.policy)
			}
		})
	}
}

// firstDenial dials a's port from c, which must be denied, and returns
// the first denial the kernel reports.
func firstDenial(t *testing.T, l *lab, port int) Denied {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan Denied, 16)
	go func() {
		_ = l.node.Do(func(ns.NetNS) error {
			return ReadDenials(ctx, func(d Denied) { got <- d })
		})
	}()
	time.Sleep(200 * time.Millisecond) // the reader binds its group
	if c, err := l.dial(t, port); err == nil {
		c.Close()
		t.Fatal("denied connection went through")
	}
	select {
	case d := <-got:
		return d
	case <-time.After(3 * time.Second):
		t.Fatal("no denial reported")
	}
	return Denied{}
}

// The kernel takes every difference WriteDiff writes (element deletes by
// key, chain flushes, deletes in order), and the result judges packets
// like a full write.
func TestPrivilegedDiffsLoad(t *testing.T) {
	l := newLab(t)
	l.serve(t, 8080)
	in := testInput()
	var last *Ruleset
	for i, step := range append([]func(*Input){func(*Input) {}}, diffSteps()...) {
		step(&in)
		rs := Compile(in)
		tx := l.nft.NewTransaction()
		if !WriteDiff(tx, last, rs) {
			Write(tx, rs)
		}
		if err := l.node.Do(func(ns.NetNS) error { return l.nft.Run(context.Background(), tx) }); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		last = rs
	}
	// The last step removed every policy: c reaches a.
	if c, err := l.dial(t, 8080); err != nil {
		t.Fatalf("after the last diff: %v", err)
	} else {
		c.Close()
	}
	in = testInput() // the steps deleted default/a; it is back
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "deny", "a", ingressOnly, nil, nil)}
	tx := l.nft.NewTransaction()
	WriteDiff(tx, last, Compile(in))
	if err := l.node.Do(func(ns.NetNS) error { return l.nft.Run(context.Background(), tx) }); err != nil {
		t.Fatal(err)
	}
	if c, err := l.dial(t, 8080); err == nil {
		c.Close()
		t.Fatal("a deny written as a diff lets c in")
	}
}

// The tiers load and judge real packets: an admin Deny closes a port a
// NetworkPolicy opens, an admin Pass leaves the other to it, a baseline
// Deny holds only while no NetworkPolicy isolates the pod; the diff of
// one tier set-up to the next loads too.
func TestPrivilegedClusterTiersJudgeRealPackets(t *testing.T) {
	l := newLab(t)
	l.serve(t, 8080)
	l.serve(t, 9000)
	in := testInput()
	allowC := policy("default", "allow-c", "a", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("c")}}}}, nil)
	fromC := []cnp.ClusterNetworkPolicyIngressPeer{{Pods: &cnp.NamespacedPod{PodSelector: *sel("c")}}}
	in.Policies = []*networkingv1.NetworkPolicy{allowC}
	in.ClusterPolicies = []*cnp.ClusterNetworkPolicy{
		clusterPolicy("deny-9000", cnp.AdminTier, 2, "default", []cnp.ClusterNetworkPolicyIngressRule{{Action: deny, From: fromC, Protocols: []cnp.ClusterNetworkPolicyProtocol{tcpPort(9000)}}}, nil),
		clusterPolicy("pass-8080", cnp.AdminTier, 1, "default", []cnp.ClusterNetworkPolicyIngressRule{{Action: pass, From: fromC, Protocols: []cnp.ClusterNetworkPolicyProtocol{tcpPort(8080)}}}, nil),
		clusterPolicy("baseline-deny", cnp.BaselineTier, 1, "default", []cnp.ClusterNetworkPolicyIngressRule{{Action: deny, From: fromC}}, nil),
	}
	l.apply(t, in)
	reach := func(port int) bool {
		c, err := l.dial(t, port)
		if err != nil {
			return false
		}
		defer c.Close()
		return echoes(c)
	}
	if !reach(8080) || reach(9000) {
		t.Errorf("admin Pass then NetworkPolicy allow: 8080 reached %v (want true); admin Deny: 9000 reached %v (want false)", reach(8080), reach(9000))
	}
	in.Policies = nil // no NetworkPolicy: the baseline Deny decides what passed
	last := Compile(in)
	l.apply(t, in)
	if reach(8080) {
		t.Error("8080 reached: the baseline Deny should hold without a NetworkPolicy")
	}
	in.ClusterPolicies = in.ClusterPolicies[:2]
	tx := l.nft.NewTransaction()
	if !WriteDiff(tx, last, Compile(in)) {
		tx = l.nft.NewTransaction()
		Write(tx, Compile(in))
	}
	if err := l.node.Do(func(ns.NetNS) error { return l.nft.Run(context.Background(), tx) }); err != nil {
		t.Fatalf("write without the baseline tier: %v", err)
	}
	if !reach(8080) {
		t.Error("8080 not reached after the baseline tier went")
	}
}

// A flow allowed under a table's generation is stamped and passes without
// being judged while that table stands, and is judged again once a table
// with another generation is written: a deny then cuts it.
func TestPrivilegedStampedFlowsAreJudgedAgainAfterAChange(t *testing.T) {
	l := newLab(t)
	l.serve(t, 8080)
	in := testInput()
	in.Generation = 0x11
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "allow-c", "a", ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("c")}}}}, nil)}
	l.apply(t, in)
	conn, err := l.dial(t, 8080)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if !echoes(conn) {
		t.Fatal("allowed connection does not echo")
	}
	// Same generation, policies that deny (the controller never writes
	// this: it changes the generation with any change): the stamped flow
	// passes on its mark, a new one is judged and refused.
	in.Policies = []*networkingv1.NetworkPolicy{policy("default", "deny", "a", ingressOnly, nil, nil)}
	l.apply(t, in)
	if !echoes(conn) {
		t.Fatal("a flow stamped with the table's generation was judged again")
	}
	if c, err := l.dial(t, 8080); err == nil {
		c.Close()
		t.Fatal("a new connection passed the deny")
	}
	in.Generation = NextGeneration(in.Generation)
	l.apply(t, in)
	if echoes(conn) {
		t.Fatal("the deny under a new generation did not cut the stamped flow")
	}
}
