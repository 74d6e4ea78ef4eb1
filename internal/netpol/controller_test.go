package netpol

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/knftables"
)

func startController(t *testing.T) (*Controller, *knftables.Fake) {
	return startControllerWith(t, func(*Controller) {})
}

// startControllerWith runs a controller set up by setup first.
func startControllerWith(t *testing.T, setup func(*Controller)) (*Controller, *knftables.Fake) {
	in := testInput()
	in.Policies = append(in.Policies, policy("default", "deny", "", ingressOnly, nil, nil))
	client := fake.NewSimpleClientset()
	for _, p := range in.Pods {
		_, _ = client.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metaCreate)
	}
	for _, p := range in.Policies {
		_, _ = client.NetworkingV1().NetworkPolicies(p.Namespace).Create(context.Background(), p, metaCreate)
	}
	nft := knftables.NewFake(knftables.InetFamily, TableName)
	c := New(client, "n1", nft, slog.New(slog.DiscardHandler), nil)
	c.MinInterval = time.Millisecond
	setup(c)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = c.Run(ctx) }()
	return c, nft
}

// PodReady returns only once the table written holds the new address in
// the pod's policies, and refuses in time for a pod the agent never sees.
func TestPodReadyWaitsForTheTable(t *testing.T) {
	c, nft := startController(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// default/a exists with status 10.244.1.10; its sandbox is recreated
	// with a new address the status does not show.
	if err := c.PodReady(ctx, "default", "a", []netip.Addr{netip.MustParseAddr("10.244.1.77")}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(nft.Dump(), "10.244.1.77 : goto grp-in-") {
		t.Fatalf("PodReady returned before the address was judged:\n%s", nft.Dump())
	}
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	err := c.PodReady(short, "default", "ghost", []netip.Addr{netip.MustParseAddr("10.244.1.78")})
	if err == nil || !strings.Contains(err.Error(), "not known to the agent") {
		t.Fatalf("unknown pod: %v", err)
	}
}

var metaCreate = metav1.CreateOptions{}

// The fast path hears 0 before each write and the table's generation only
// once the table holding it is written, so it never carries a flow on a
// verdict older than the table; with KeepEstablished nothing is stamped
// and it hears nothing.
func TestGenerationTold(t *testing.T) {
	type told struct {
		gen     uint32
		written bool // the table then held the generation's stamp
	}
	calls := make(chan told, 16)
	c, _ := startControllerWith(t, func(c *Controller) {
		nft := c.nft.(*knftables.Fake)
		c.OnGeneration = func(gen uint32) {
			calls <- told{gen, strings.Contains(nft.Dump(), fmt.Sprintf("ct mark and %#08x == %#08x accept", GenMask, gen))}
		}
	})
	next := func() told {
		select {
		case v := <-calls:
			return v
		case <-time.After(5 * time.Second):
			t.Fatal("no generation told")
		}
		return told{}
	}
	var last uint32
	for round := range 2 {
		if v := next(); v.gen != 0 {
			t.Fatalf("round %d: before the write: told %#x, want 0", round, v.gen)
		}
		v := next()
		if v.gen == 0 || v.gen == last || !v.written {
			t.Fatalf("round %d: after the write: told %#x (the previous %#x), table written: %v", round, v.gen, last, v.written)
		}
		last = v.gen
		_, _ = c.client.NetworkingV1().NetworkPolicies("default").Create(context.Background(), policy("default", "deny2", "", ingressOnly, nil, nil), metaCreate)
	}

	calls2 := make(chan uint32, 16)
	startControllerWith(t, func(c *Controller) {
		c.KeepEstablished = true
		c.OnGeneration = func(gen uint32) { calls2 <- gen }
	})
	time.Sleep(300 * time.Millisecond)
	if len(calls2) != 0 {
		t.Errorf("with KeepEstablished the fast path was told %d generations", len(calls2))
	}
}

func TestOnlyRelevantUpdatesRecompile(t *testing.T) {
	a := testPod("default", "a", "n1", ipA, "a")
	same := a.DeepCopy()
	same.ResourceVersion = "2"
	same.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if policyRelevantChange(a, same) {
		t.Error("a status condition change recompiles")
	}
	relabelled := a.DeepCopy()
	relabelled.Labels["tier"] = "db"
	moved := a.DeepCopy()
	moved.Status.PodIPs = []corev1.PodIP{{IP: "10.244.1.99"}}
	done := a.DeepCopy()
	done.Status.Phase = corev1.PodSucceeded
	for name, n := range map[string]*corev1.Pod{"labels": relabelled, "addresses": moved, "finished": done} {
		if !policyRelevantChange(a, n) {
			t.Errorf("%s change does not recompile", name)
		}
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: map[string]string{"team": "a"}}}
	ns2 := ns.DeepCopy()
	ns2.Labels["team"] = "b"
	if !policyRelevantChange(ns, ns2) || policyRelevantChange(ns, ns.DeepCopy()) {
		t.Error("namespace label changes, and only they, recompile")
	}
}
