package routing

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// Controller keeps routes and VXLAN entries to every peer node in sync,
// one workqueue key per node, with a periodic full reconcile that repairs
// drift and removes entries of nodes that left while the agent was down.
// The reconcile is a key of the same queue and one worker drains it, so
// there is one writer: a reconcile can never remove the route of a peer a
// worker added after the reconcile listed the nodes.
type Controller struct {
	local    Local
	dp       Datapath
	nodes    listersv1.NodeLister
	recorder record.EventRecorder
	log      *slog.Logger
	queue    workqueue.TypedRateLimitingInterface[string]
	resync   time.Duration

	mu       sync.Mutex
	plans    map[string]PeerPlan
	reported map[string]bool // peers reported unreachable

	peers   *prometheus.GaugeVec
	syncs   *prometheus.CounterVec
	repairs prometheus.Counter
}

// NewController wires a controller; local must be complete (IP, subnet).
func NewController(local Local, dp Datapath, nodes listersv1.NodeLister, recorder record.EventRecorder, log *slog.Logger, reg prometheus.Registerer) *Controller {
	c := &Controller{local: local, dp: dp, nodes: nodes, recorder: recorder, log: log,
		queue:    workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		resync:   5 * time.Second,
		plans:    map[string]PeerPlan{},
		reported: map[string]bool{},
		peers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "weft_routing_peers",
			Help: "Peer nodes by how they are reached."}, []string{"mode"}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_routing_peer_syncs_total",
			Help: "Per-peer datapath syncs by result."}, []string{"result"}),
		repairs: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_routing_repaired_entries_total",
			Help: "Kernel entries restored or removed by the periodic reconcile (drift)."}),
	}
	if reg != nil {
		reg.MustRegister(c.peers, c.syncs, c.repairs)
	}
	return c
}

// Handler returns the informer handler that feeds the queue.
func (c *Controller) Handler() cache.ResourceEventHandler {
	enqueue := func(o any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(o); err == nil && key != c.local.Name {
			c.queue.Add(key)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, o any) { enqueue(o) },
		DeleteFunc: enqueue,
	}
}

// reconcileKey queues a full reconcile; no Node name contains a NUL.
const reconcileKey = "\x00reconcile"

// Run starts the worker and the periodic reconcile; the informer must be
// synced before.
func (c *Controller) Run(ctx context.Context) {
	// Start-up: one reconcile that removes what belongs to nodes that are
	// gone and adds nothing twice.
	c.queue.Add(reconcileKey)
	go func() {
		for c.processNext() {
		}
	}()
	t := time.NewTicker(c.resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			c.queue.ShutDown()
			return
		case <-t.C:
			c.queue.Add(reconcileKey)
		}
	}
}

func (c *Controller) processNext() bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if key == reconcileKey {
		c.fullReconcile()
		return true
	}
	if err := c.syncPeer(key); err != nil {
		c.syncs.WithLabelValues("error").Inc()
		c.log.Warn("peer sync failed; retrying", "peer", key, "err", err)
		c.queue.AddRateLimited(key)
		return true
	}
	c.syncs.WithLabelValues("ok").Inc()
	c.queue.Forget(key)
	return true
}

func (c *Controller) syncPeer(name string) error {
	node, err := c.nodes.Get(name)
	next := PeerPlan{Peer: name}
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err == nil {
		next = PlanPeer(c.local, PeerFromNode(node))
	}
	c.mu.Lock()
	prev, had := c.plans[name]
	c.mu.Unlock()
	if had && prev.Key() == next.Key() {
		return nil
	}
	if err := c.dp.ApplyPeer(prev, next); err != nil {
		return err
	}
	c.mu.Lock()
	if node == nil {
		delete(c.plans, name)
	} else {
		c.plans[name] = next
	}
	c.mu.Unlock()
	if node == nil {
		c.log.Info("peer removed", "peer", name)
	} else {
		c.log.Info("peer synced", "peer", name, "mode", next.Mode, "routes", len(next.Routes), "reason", next.Reason)
		c.report(node, next)
	}
	c.updateGauge()
	return nil
}

func (c *Controller) fullReconcile() {
	start := time.Now()
	nodes, err := c.nodes.List(everything())
	if err != nil {
		c.log.Warn("list nodes", "err", err)
		return
	}
	plans := map[string]PeerPlan{}
	var list []PeerPlan
	for _, n := range nodes {
		if n.Name == c.local.Name {
			continue
		}
		p := PlanPeer(c.local, PeerFromNode(n))
		plans[n.Name] = p
		list = append(list, p)
		c.report(n, p)
	}
	// A peer that fails keeps its old entries; the others are applied.
	changed, err := c.dp.Reconcile(list)
	if err != nil {
		c.log.Warn("reconcile: some peers failed", "err", err)
	}
	if changed > 0 {
		c.repairs.Add(float64(changed))
		c.log.Info("reconcile repaired entries", "changed", changed, "peers", len(list), "took", time.Since(start))
	}
	c.mu.Lock()
	c.plans = plans
	c.mu.Unlock()
	c.updateGauge()
}

// report tells users about a peer that is not routed: host-gw cannot reach
// it, or its podCIDR is refused. A Warning Event on the peer Node (once per
// spell) and a log line.
func (c *Controller) report(node *corev1.Node, p PeerPlan) {
	bad := p.Mode == ModeUnreachable || p.Mode == ModeRefused
	c.mu.Lock()
	already := c.reported[node.Name]
	c.reported[node.Name] = bad
	c.mu.Unlock()
	if !bad || already {
		return
	}
	reason := "HostGWPeerUnreachable"
	if p.Mode == ModeRefused {
		reason = "PodCIDRRefused"
	}
	c.recorder.Event(node, corev1.EventTypeWarning, reason, fmt.Sprintf("from %s: %s", c.local.Name, p.Reason))
	c.log.Warn("peer not routed", "peer", node.Name, "mode", p.Mode, "reason", p.Reason)
}

func (c *Controller) updateGauge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	counts := map[Mode]int{ModeDirect: 0, ModeVXLAN: 0, ModeUnreachable: 0, ModeNotReady: 0, ModeRefused: 0}
	for _, p := range c.plans {
		counts[p.Mode]++
	}
	for m, n := range counts {
		c.peers.WithLabelValues(string(m)).Set(float64(n))
	}
}

// Plans returns a copy of the current plans (for status and tests).
func (c *Controller) Plans() map[string]PeerPlan {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]PeerPlan, len(c.plans))
	for k, v := range c.plans {
		out[k] = v
	}
	return out
}
