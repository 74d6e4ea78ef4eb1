package routing

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
)

// fakeDP records what the controller asks of the kernel.
type fakeDP struct {
	mu    sync.Mutex
	state map[string]PeerPlan
}

func (f *fakeDP) EnsureVXLAN(VXLANConfig) error { return nil }
func (f *fakeDP) ApplyPeer(prev, next PeerPlan) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(next.Routes) == 0 && next.VTEPMAC == nil {
		delete(f.state, prev.Peer)
		return nil
	}
	f.state[next.Peer] = next
	return nil
}
func (f *fakeDP) Reconcile(plans []PeerPlan) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = map[string]PeerPlan{}
	for _, p := range plans {
		if len(p.Routes) > 0 {
			f.state[p.Peer] = p
		}
	}
	return 0, nil
}
func (f *fakeDP) get(name string) (PeerPlan, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.state[name]
	return p, ok
}

func node(name, ip, cidr string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{AnnotationVTEPMAC: VTEPMAC(name).String()}},
		Spec:       corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}},
	}
}

func TestControllerFollowsNodes(t *testing.T) {
	client := fake.NewClientset(node("a", "198.18.1.11", "10.244.1.0/24"), node("b", "198.18.1.12", "10.244.2.0/24"),
		node("c", "198.18.2.13", "10.244.3.0/24"))
	factory := informers.NewSharedInformerFactory(client, 0)
	inf := factory.Core().V1().Nodes()
	dp := &fakeDP{state: map[string]PeerPlan{}}
	rec := record.NewFakeRecorder(10)
	local := Local{Name: "a", NodeIP: mustIP("198.18.1.11"), Underlay: cidr("198.18.1.0/24"), Backend: BackendHostGW}
	c := NewController(local, dp, inf.Lister(), rec, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	_, _ = inf.Informer().AddEventHandler(c.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	factory.Start(ctx.Done())
	cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced)
	go c.Run(ctx)

	waitFor(t, func() bool { _, ok := dp.get("b"); return ok })
	if _, ok := dp.get("c"); ok {
		t.Fatal("host-gw programmed a route to a peer in another subnet")
	}
	select {
	case ev := <-rec.Events:
		if !strings.Contains(ev, "HostGWPeerUnreachable") || !strings.Contains(ev, "c") {
			t.Fatalf("event %q", ev)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no event for the unreachable peer")
	}
	if err := client.CoreV1().Nodes().Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := dp.get("b"); return !ok })
	if _, err := client.CoreV1().Nodes().Create(ctx, node("d", "198.18.1.14", "10.244.4.0/24"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { p, ok := dp.get("d"); return ok && p.Routes[0].Via.String() == "198.18.1.14" })
}

func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if f() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("condition not met in 5s")
}

// oneWriterDP fails the test's expectation when two writes overlap.
type oneWriterDP struct {
	fakeDP
	busy    atomic.Int32
	overlap atomic.Bool
}

func (f *oneWriterDP) enter() {
	if f.busy.Add(1) > 1 {
		f.overlap.Store(true)
	}
	time.Sleep(time.Millisecond) // widen the window a second writer would hit
}

func (f *oneWriterDP) ApplyPeer(prev, next PeerPlan) error {
	f.enter()
	defer f.busy.Add(-1)
	return f.fakeDP.ApplyPeer(prev, next)
}

func (f *oneWriterDP) Reconcile(plans []PeerPlan) (int, error) {
	f.enter()
	defer f.busy.Add(-1)
	return f.fakeDP.Reconcile(plans)
}

// The periodic reconcile and the per-peer syncs never write at the same
// time (a reconcile that listed the nodes before a worker added a peer
// would remove that peer's routes), and a refused podCIDR is reported and
// never routed while other peers are.
func TestControllerOneWriterAndRefusedPeers(t *testing.T) {
	client := fake.NewClientset(node("a", "198.18.1.11", "10.244.1.0/24"), node("evil", "198.18.1.99", "10.96.0.0/24"))
	factory := informers.NewSharedInformerFactory(client, 0)
	inf := factory.Core().V1().Nodes()
	dp := &oneWriterDP{fakeDP: fakeDP{state: map[string]PeerPlan{}}}
	rec := record.NewFakeRecorder(100)
	local := Local{Name: "a", NodeIP: mustIP("198.18.1.11"), Underlay: cidr("198.18.1.0/24"), Backend: BackendHostGW,
		ClusterCIDRs: []*net.IPNet{cidr("10.244.0.0/16")}}
	c := NewController(local, dp, inf.Lister(), rec, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	c.resync = 2 * time.Millisecond
	_, _ = inf.Informer().AddEventHandler(c.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	factory.Start(ctx.Done())
	cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced)
	go c.Run(ctx)
	for i := 0; i < 40; i++ {
		name := fmt.Sprintf("n%d", i)
		if _, err := client.CoreV1().Nodes().Create(ctx, node(name, fmt.Sprintf("198.18.1.%d", 20+i), fmt.Sprintf("10.244.%d.0/24", 20+i)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool {
		for i := 0; i < 40; i++ {
			if _, ok := dp.get(fmt.Sprintf("n%d", i)); !ok {
				return false
			}
		}
		return true
	})
	if dp.overlap.Load() {
		t.Fatal("two datapath writes ran at the same time")
	}
	if _, ok := dp.get("evil"); ok {
		t.Fatal("a podCIDR outside the cluster CIDRs was routed")
	}
	if c.Plans()["evil"].Mode != ModeRefused {
		t.Fatalf("plan of the refused peer: %+v", c.Plans()["evil"])
	}
	found := false
	for len(rec.Events) > 0 && !found {
		ev := <-rec.Events
		found = strings.Contains(ev, "PodCIDRRefused") && strings.Contains(ev, "10.96.0.0/24")
	}
	if !found {
		t.Fatal("no PodCIDRRefused event")
	}
}
