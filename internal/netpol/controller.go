package netpol

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/knftables"
	cnpv1beta1 "sigs.k8s.io/network-policy-api/apis/v1beta1"
	npaclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"
	npainformers "sigs.k8s.io/network-policy-api/pkg/client/informers/externalversions"
	npalisters "sigs.k8s.io/network-policy-api/pkg/client/listers/apis/v1beta1"
)

// Controller keeps the weft-policy table in line with NetworkPolicies,
// pods and namespaces. Informer handlers only mark it dirty; one loop
// compiles and writes the whole table, at most every MinInterval.
type Controller struct {
	// CheckAddresses, when set, refuses a pod's addresses before policy
	// is judged (the agent: addresses outside the node's current pod
	// CIDRs, handed out from a stale runtime config).
	CheckAddresses func([]netip.Addr) error

	node string
	nft  knftables.Interface
	log  *slog.Logger

	factory    informers.SharedInformerFactory
	policies   networkinglisters.NetworkPolicyLister
	pods       listersv1.PodLister
	namespaces listersv1.NamespaceLister
	client     kubernetes.Interface

	// The admin and baseline tiers (WatchClusterPolicies), read once
	// tiersOn.
	tiersOn     atomic.Bool
	cnpFactory  npainformers.SharedInformerFactory
	cnpPolicies npalisters.ClusterNetworkPolicyLister
	nodes       listersv1.NodeLister

	// KeepEstablished: see Input.
	KeepEstablished bool
	MinInterval     time.Duration
	// FullEvery: the whole table is rewritten at least this often, even
	// without changes, repairing drift; other writes are differences.
	FullEvery time.Duration
	Recorder  record.EventRecorder
	// Domains, when set, fills the domain-name sets from DNS answers; it
	// must write to the same table as nft.
	Domains *DomainLearner
	// Status, when set, runs once ClusterNetworkPolicy is served.
	Status *StatusWriter
	// OnWritten, when set, hears after each sync which local pod
	// addresses the table knows and which directions policies judge.
	OnWritten func(map[netip.Addr]Judgement)
	// OnGeneration, when set, hears 0 before a write that changes the
	// table and the table's generation once it is in the kernel: flows
	// whose conntrack mark holds it are allowed by the table in force.
	// Never called with KeepEstablished (nothing is stamped).
	OnGeneration func(gen uint32)

	memo     Memo     // policies parsed, from one sync to the next
	last     *Ruleset // what the table holds; nil: write it whole
	lastFull time.Time
	// tableGen is the generation of the table written last (Input.Generation);
	// it starts random so a restarted agent does not reuse the stamps on
	// flows its predecessor allowed.
	tableGen uint32
	kick     chan struct{}
	mu       sync.Mutex
	gen      uint64                // bumped by every change
	pending  map[string]pendingPod // namespace/name → addresses from weft-cni
	waiting  map[string]int        // pods whose CNI ADD waits → number of waiters
	written  map[string]uint64     // waited-for pods in a written table → the generation
	done     chan struct{}         // closed and replaced after each write
	view     view                  // what the last table knew, for denial reports
	denials  *denials
	reported map[string]string // policy → problems last reported

	syncs    *prometheus.CounterVec
	duration prometheus.Histogram
	lastSync prometheus.Gauge
	// readyWait: how long CNI ADDs waited for the table.
	readyWait prometheus.Histogram
}

type pendingPod struct {
	ips  []netip.Addr
	seen time.Time
}

// judgedBy names the policies that select a local pod, per direction.
type judgedBy struct {
	ingress, egress []string
}

// New wires a controller with its own informers: every pod and namespace
// of the cluster (peers may be anywhere) and every NetworkPolicy.
func New(client kubernetes.Interface, node string, nft knftables.Interface, log *slog.Logger, reg prometheus.Registerer) *Controller {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(SlimPod))
	c := &Controller{node: node, nft: nft, log: log, factory: factory, client: client,
		policies:    factory.Networking().V1().NetworkPolicies().Lister(),
		pods:        factory.Core().V1().Pods().Lister(),
		namespaces:  factory.Core().V1().Namespaces().Lister(),
		MinInterval: 20 * time.Millisecond, FullEvery: time.Minute,
		kick: make(chan struct{}, 1), pending: map[string]pendingPod{}, written: map[string]uint64{}, waiting: map[string]int{},
		done: make(chan struct{}), reported: map[string]string{},
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_policy_syncs_total",
			Help: "Writes of the NetworkPolicy table: full (the whole table) or diff (what changed), by result."}, []string{"kind", "result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_policy_sync_duration_seconds",
			Help: "Time to compile and write the NetworkPolicy table.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_policy_last_sync_timestamp_seconds",
			Help: "When the NetworkPolicy table was last written."}),
		readyWait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_policy_pod_ready_wait_seconds",
			Help: "How long a pod's CNI ADD waited for its addresses to be in the NetworkPolicy table.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
	}
	c.denials = newDenials(log)
	if reg != nil {
		reg.MustRegister(c.syncs, c.duration, c.lastSync, c.readyWait, c.denials.counter)
	}
	// Pod and namespace updates matter only when what policy reads
	// changed; status churn (conditions, restarts) must not recompile.
	h := cache.ResourceEventHandlerFuncs{AddFunc: func(any) { c.changed() }, DeleteFunc: func(any) { c.changed() },
		UpdateFunc: func(old, cur any) {
			if policyRelevantChange(old, cur) {
				c.changed()
			}
		}}
	for _, inf := range []cache.SharedIndexInformer{factory.Networking().V1().NetworkPolicies().Informer(),
		factory.Core().V1().Pods().Informer(), factory.Core().V1().Namespaces().Informer()} {
		_, _ = inf.AddEventHandler(h)
	}
	return c
}

// WatchClusterPolicies turns on the admin and baseline tiers: the
// controller also watches ClusterNetworkPolicies and, for their node
// peers, Nodes. Call before Run.
func (c *Controller) WatchClusterPolicies(cs npaclient.Interface) {
	c.cnpFactory = npainformers.NewSharedInformerFactory(cs, 0)
	c.cnpPolicies = c.cnpFactory.Policy().V1beta1().ClusterNetworkPolicies().Lister()
}

// startClusterPolicies starts the tiers' informers once the API server
// serves ClusterNetworkPolicy (its CRD may be established after the
// agent starts, or never be installed: NetworkPolicy goes on alone).
func (c *Controller) startClusterPolicies(ctx context.Context) {
	if c.cnpFactory == nil {
		return
	}
	gv := cnpv1beta1.GroupVersion.String()
	for warned := false; ; {
		_, err := c.client.Discovery().ServerResourcesForGroupVersion(gv)
		if err == nil {
			break
		}
		if !warned {
			warned = true
			c.log.Warn("ClusterNetworkPolicy is not served (its CRD not installed?): admin and baseline tiers off until it is", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
	h := cache.ResourceEventHandlerFuncs{AddFunc: func(any) { c.changed() }, DeleteFunc: func(any) { c.changed() },
		UpdateFunc: func(old, cur any) {
			if policyRelevantChange(old, cur) {
				c.changed()
			}
		}}
	nodes := informers.NewSharedInformerFactory(c.client, 0)
	c.nodes = nodes.Core().V1().Nodes().Lister()
	_, _ = c.cnpFactory.Policy().V1beta1().ClusterNetworkPolicies().Informer().AddEventHandler(h)
	_, _ = nodes.Core().V1().Nodes().Informer().AddEventHandler(h)
	c.cnpFactory.Start(ctx.Done())
	nodes.Start(ctx.Done())
	c.cnpFactory.WaitForCacheSync(ctx.Done())
	nodes.WaitForCacheSync(ctx.Done())
	if ctx.Err() == nil {
		c.tiersOn.Store(true)
		c.log.Info("ClusterNetworkPolicy admin and baseline tiers on")
		if c.Status != nil {
			go c.Status.Run(ctx)
		}
		c.changed()
	}
}

// reportCluster logs, once per change, what of a cluster policy was left
// out.
func (c *Controller) reportCluster(pols []*cnpv1beta1.ClusterNetworkPolicy, problems []Problem) {
	by := map[string][]string{}
	for _, p := range problems {
		if p.Namespace == "" {
			by[p.Name] = append(by[p.Name], p.Message)
		}
	}
	for _, p := range pols {
		key := "cluster/" + p.Name
		msg := strings.Join(by[p.Name], "; ")
		if c.reported[key] == msg {
			continue
		}
		c.reported[key] = msg
		if msg == "" {
			continue
		}
		// The policy's status and Event (StatusWriter) tell the cluster once.
		c.log.Warn("ClusterNetworkPolicy partly ignored", "policy", p.Name, "problems", msg)
	}
}

// policyRelevantChange says whether an update changes what Compile reads.
func policyRelevantChange(old, cur any) bool {
	switch o := old.(type) {
	case *corev1.Pod:
		n, ok := cur.(*corev1.Pod)
		if !ok {
			return true
		}
		finished := func(p *corev1.Pod) bool {
			return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
		}
		return !maps.Equal(o.Labels, n.Labels) || o.Spec.NodeName != n.Spec.NodeName ||
			!slices.Equal(o.Status.PodIPs, n.Status.PodIPs) || finished(o) != finished(n) ||
			!reflect.DeepEqual(o.Spec.Containers, n.Spec.Containers)
	case *corev1.Namespace:
		n, ok := cur.(*corev1.Namespace)
		return !ok || !maps.Equal(o.Labels, n.Labels)
	case *cnpv1beta1.ClusterNetworkPolicy:
		// The spec (generation) and labels, never the status weft writes.
		n, ok := cur.(*cnpv1beta1.ClusterNetworkPolicy)
		return !ok || o.Generation != n.Generation || !maps.Equal(o.Labels, n.Labels)
	case *corev1.Node:
		// Node peers: labels and addresses, never the status heartbeats.
		n, ok := cur.(*corev1.Node)
		return !ok || !maps.Equal(o.Labels, n.Labels) || !slices.Equal(o.Status.Addresses, n.Status.Addresses)
	}
	return true
}

func (c *Controller) changed() {
	c.mu.Lock()
	c.gen++
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run starts the informers and writes the table until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	go c.startClusterPolicies(ctx)
	c.factory.Start(ctx.Done())
	for typ, ok := range c.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("NetworkPolicy: %v cache did not sync", typ)
		}
	}
	go c.readDenials(ctx)
	tick := time.NewTicker(c.FullEvery)
	defer tick.Stop()
	var last time.Time
	failed := false
	for {
		// A CNI ADD waiting for its pod is worth a write at once; other
		// changes, and retries after a failed write, are batched.
		if wait := c.MinInterval - time.Since(last); wait > 0 && (failed || !c.addWaits()) {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		last = time.Now()
		err := c.Sync(ctx)
		failed = err != nil
		if err != nil {
			c.log.Error("NetworkPolicy table", "err", err)
			c.changed() // try again after MinInterval
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		case <-tick.C:
		}
	}
}

// run writes tx, through the domain learner when there is one, so that
// the domain-name sets it creates get their live addresses at once.
func (c *Controller) run(ctx context.Context, tx *knftables.Transaction, rs, old *Ruleset) error {
	if c.Domains == nil {
		return c.nft.Run(ctx, tx)
	}
	return c.Domains.Apply(ctx, tx, rs, old)
}

func (c *Controller) addWaits() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiting) > 0
}

// transaction is what turns the table into rs: a difference, or the
// whole table when it is due or no difference can do it.
func (c *Controller) transaction(rs *Ruleset) (*knftables.Transaction, string) {
	tx := c.nft.NewTransaction()
	if time.Since(c.lastFull) <= c.FullEvery && WriteDiff(tx, c.last, rs) {
		return tx, "diff"
	}
	tx = c.nft.NewTransaction()
	Write(tx, rs)
	return tx, "full"
}

// generation tells OnGeneration of gen (0: a write is under way).
func (c *Controller) generation(gen uint32) {
	if c.OnGeneration != nil && !c.KeepEstablished {
		c.OnGeneration(gen)
	}
}

// Sync compiles and writes the table once.
func (c *Controller) Sync(ctx context.Context) error {
	start := time.Now()
	c.mu.Lock()
	gen := c.gen
	pending := c.pendingInput()
	c.mu.Unlock()
	in, err := c.input(pending)
	if err != nil {
		return err
	}
	if c.tableGen == 0 {
		c.tableGen = NextGeneration(rand.Uint32() &^ DomainConnMark)
	}
	in.Generation = c.tableGen
	rs := Compile(in)
	tx, kind := c.transaction(rs)
	if tx.NumOperations() > 0 {
		// Something changes: so does the generation, and every open flow
		// is judged again at its next packet.
		c.tableGen = NextGeneration(c.tableGen)
		rs.SetGeneration(c.tableGen)
		tx, kind = c.transaction(rs)
	}
	var old *Ruleset
	if kind == "diff" {
		old = c.last
	}
	if tx.NumOperations() == 0 {
		kind = "none"
	} else {
		c.generation(0)
		if err := c.run(ctx, tx, rs, old); err != nil {
			c.syncs.WithLabelValues(kind, "error").Inc()
			c.last = nil // the next write is whole
			return err
		}
		c.generation(c.tableGen)
	}
	if kind == "full" {
		c.lastFull = time.Now()
	}
	c.last = rs
	c.syncs.WithLabelValues(kind, "ok").Inc()
	c.duration.Observe(time.Since(start).Seconds())
	c.lastSync.SetToCurrentTime()
	c.report(in.Policies, rs.Problems)
	c.reportCluster(in.ClusterPolicies, rs.Problems)
	if c.OnWritten != nil {
		c.OnWritten(judgements(in, rs))
	}
	c.mu.Lock()
	c.view = view{pods: podsByAddress(in), judged: judgedFrom(rs)}
	known := map[string]bool{}
	for _, p := range in.Pods {
		known[p.Namespace+"/"+p.Name] = true
	}
	for key := range c.waiting {
		if known[key] {
			c.written[key] = gen
		}
	}
	close(c.done)
	c.done = make(chan struct{})
	c.mu.Unlock()
	return nil
}

func (c *Controller) input(pending map[string][]netip.Addr) (Input, error) {
	pols, err := c.policies.List(labels.Everything())
	if err != nil {
		return Input{}, err
	}
	pods, err := c.pods.List(labels.Everything())
	if err != nil {
		return Input{}, err
	}
	nss, err := c.namespaces.List(labels.Everything())
	if err != nil {
		return Input{}, err
	}
	in := Input{Node: c.node, Policies: pols, Pods: pods, Namespaces: nss, Pending: pending, KeepEstablished: c.KeepEstablished, Memo: &c.memo}
	if c.tiersOn.Load() {
		if in.ClusterPolicies, err = c.cnpPolicies.List(labels.Everything()); err != nil {
			return Input{}, err
		}
		if in.Nodes, err = c.nodes.List(labels.Everything()); err != nil {
			return Input{}, err
		}
	}
	return in, nil
}

// pendingInput copies the addresses weft-cni reported and forgets those
// the pod's status now shows, or whose pod is gone. Call with mu held.
func (c *Controller) pendingInput() map[string][]netip.Addr {
	out := map[string][]netip.Addr{}
	for key, p := range c.pending {
		pod, err := c.pods.Pods(namespaceOf(key)).Get(nameOf(key))
		if (err == nil && statusShows(pod, p.ips)) || (err != nil && time.Since(p.seen) > time.Minute) {
			delete(c.pending, key)
			continue
		}
		out[key] = p.ips
	}
	return out
}

func statusShows(pod *corev1.Pod, ips []netip.Addr) bool {
	for _, ip := range ips {
		found := false
		for _, s := range pod.Status.PodIPs {
			if a, err := netip.ParseAddr(s.IP); err == nil && a.Unmap() == ip.Unmap() {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func namespaceOf(key string) string { ns, _, _ := strings.Cut(key, "/"); return ns }
func nameOf(key string) string      { _, n, _ := strings.Cut(key, "/"); return n }

// PodReady records addresses weft-cni gave a pod and returns once a table
// holding them, judged by the pod's policies, is in the kernel. It gives
// up with ctx.
func (c *Controller) PodReady(ctx context.Context, namespace, name string, ips []netip.Addr) error {
	key := namespace + "/" + name
	c.mu.Lock()
	c.pending[key] = pendingPod{ips: ips, seen: time.Now()}
	c.waiting[key]++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.waiting[key]--; c.waiting[key] == 0 {
			delete(c.waiting, key)
			delete(c.written, key)
		}
		c.mu.Unlock()
	}()
	c.changed()
	c.mu.Lock()
	want := c.gen
	c.mu.Unlock()
	for {
		c.mu.Lock()
		got, ok := c.written[key]
		done := c.done
		c.mu.Unlock()
		if ok && got >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			if _, err := c.pods.Pods(namespace).Get(name); err != nil {
				return fmt.Errorf("pod %s not known to the agent yet: %w", key, ctx.Err())
			}
			return fmt.Errorf("policy table not written in time: %w", ctx.Err())
		case <-done:
		}
	}
}

// report tells, once per change, what of a policy was left out.
func (c *Controller) report(pols []*networkingv1.NetworkPolicy, problems []Problem) {
	by := map[string][]string{}
	for _, p := range problems {
		key := p.Namespace + "/" + p.Name
		by[key] = append(by[key], p.Message)
	}
	for _, p := range pols {
		key := p.Namespace + "/" + p.Name
		msg := strings.Join(by[key], "; ")
		if c.reported[key] == msg {
			continue
		}
		c.reported[key] = msg
		if msg == "" {
			continue
		}
		c.log.Warn("NetworkPolicy partly ignored: the parts named allow nothing", "policy", key, "problems", msg)
		if c.Recorder != nil {
			c.Recorder.Event(p, corev1.EventTypeWarning, "PolicyRuleIgnored", "weft allows nothing for: "+msg)
		}
	}
}

// podsByAddress names every pod address the table was compiled with.
func podsByAddress(in Input) map[netip.Addr]string {
	c := &compiler{in: in}
	out := map[netip.Addr]string{}
	for _, p := range c.podsOf(in) {
		for _, ip := range p.ips {
			if !p.hostNetwork {
				out[ip] = p.namespace + "/" + p.name
			}
		}
	}
	return out
}

// Judgement says whether some policy (of either API) selects a local pod
// address for ingress and for egress.
type Judgement struct{ Ingress, Egress bool }

// judgements covers every local pod address the table knows; an address
// in no dispatch map is judged by none.
func judgements(in Input, rs *Ruleset) map[netip.Addr]Judgement {
	out := map[netip.Addr]Judgement{}
	for _, p := range (&compiler{in: in}).podsOf(in) {
		if p.local && !p.hostNetwork {
			for _, ip := range p.ips {
				out[ip] = Judgement{}
			}
		}
	}
	for _, m := range rs.Maps {
		ingress := strings.Contains(m.Name, ChainIngress)
		for ip := range m.Elems {
			a := netip.MustParseAddr(ip)
			j := out[a]
			if ingress {
				j.Ingress = true
			} else {
				j.Egress = true
			}
			out[a] = j
		}
	}
	return out
}

func judgedFrom(rs *Ruleset) map[netip.Addr]judgedBy {
	names := map[string]string{} // chain → namespace/name, from its comment
	for n, ch := range rs.Chains {
		if strings.HasPrefix(n, "np-") {
			_, pol, _ := strings.Cut(ch.Comment, " of ")
			names[n] = pol
		}
	}
	out := map[netip.Addr]judgedBy{}
	for _, m := range rs.Maps {
		ingress := strings.HasPrefix(m.Name, ChainIngress)
		for ip, grp := range m.Elems {
			a := netip.MustParseAddr(ip)
			j := out[a]
			for _, r := range rs.Chains[grp].Rules {
				if ch, ok := strings.CutPrefix(r.Verdict, "jump "); ok {
					if ingress {
						j.ingress = append(j.ingress, names[ch])
					} else {
						j.egress = append(j.egress, names[ch])
					}
				}
			}
			sort.Strings(j.ingress)
			sort.Strings(j.egress)
			out[a] = j
		}
	}
	return out
}

// SlimPod keeps of a pod only what policies read, so that holding every
// pod of the cluster stays cheap.
func SlimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, UID: p.UID,
		Labels: p.Labels, ResourceVersion: p.ResourceVersion, DeletionTimestamp: p.DeletionTimestamp},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIPs: p.Status.PodIPs, PodIP: p.Status.PodIP}}
	for _, ctr := range p.Spec.Containers {
		if len(ctr.Ports) > 0 {
			out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: ctr.Name, Ports: ctr.Ports})
		}
	}
	return out, nil
}
