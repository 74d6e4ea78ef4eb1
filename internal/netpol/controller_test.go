package netpol

import (
	"context"
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
