package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	listersv1 "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/knftables"
)

// Proxy keeps the weft-proxy table in line with Services and
// EndpointSlices. Informer handlers only mark the state dirty; one loop
// coalesces changes and applies a full sync at most every MinInterval.
type Proxy struct {
	cfg         Config
	nft         knftables.Interface
	services    listersv1.ServiceLister
	slices      discoverylisters.EndpointSliceLister
	sliceIndex  cache.Indexer
	log         *slog.Logger
	MinInterval time.Duration
	FullEvery   time.Duration
	// CheckEvery: how often the table's chains, sets and maps are checked
	// against what was written (someone ran `nft flush ruleset` or
	// deleted the table); a missing one forces a full sync at once.
	CheckEvery time.Duration

	// Health serves healthCheckNodePorts; nil disables them.
	Health *HealthServer

	// Bulk, if set, writes the elements of full syncs (see ElementWriter);
	// without it a full sync is one nft transaction.
	Bulk ElementWriter
	// recreate: the next full sync deletes and rewrites the table in one
	// nft transaction (start without Bulk, or after a failed full sync).
	recreate bool

	// CleanConntrack deletes stale UDP conntrack entries after syncs.
	CleanConntrack bool
	// Recorder, when set, reports as Events on Services: refused and
	// conflicting external addresses, rules the kernel refused.
	Recorder record.EventRecorder
	// guard: what external addresses Services may take, as of the last
	// sync (only Sync touches it); guardKey notices changes.
	guard    AddressGuard
	guardKey string
	refused  map[string]string // service → the refusals last reported
	// conflicts: service → the external addresses it lost, last reported.
	conflicts map[string]string
	// skipped: services the kernel refused, left out until they change.
	skipped map[string]string
	// What the table holds, per service; nil forces a full sync.
	state    *tableState
	lastFull time.Time

	kick chan struct{}
	mu   sync.Mutex
	// node: the zone and addresses last given to UpdateNode; nodeChanged:
	// not yet copied into cfg (only Sync touches cfg while Run runs).
	node        *nodeInfo
	nodeChanged bool
	nodeAddrs   map[string]string // every node's addresses (SetNodeAddresses)
	firstDirt   time.Time         // earliest unsynced change, for the latency metric
	changed     map[string]bool   // namespace/name of services changed since the last sync
	// lastUpdated is when a sync last succeeded (kube-proxy's /healthz).
	lastUpdated time.Time

	syncDuration prometheus.Histogram
	progLatency  prometheus.Histogram
	syncs        *prometheus.CounterVec
	drifts       prometheus.Counter
	lastSync     prometheus.Gauge
	fullSync     prometheus.Gauge
	svcGauge     prometheus.Gauge
	epGauge      prometheus.Gauge
	refusedGauge prometheus.Gauge
	skippedGauge prometheus.Gauge
}

// New wires a proxy on a shared informer factory; call Run after Start.
func New(cfg Config, nft knftables.Interface, factory informers.SharedInformerFactory, log *slog.Logger, reg prometheus.Registerer) *Proxy {
	p := &Proxy{cfg: cfg, nft: nft, log: log, MinInterval: 100 * time.Millisecond, FullEvery: time.Hour, CheckEvery: 10 * time.Second,
		kick: make(chan struct{}, 1), changed: map[string]bool{}, refused: map[string]string{}, conflicts: map[string]string{}, skipped: map[string]string{},
		skippedGauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_proxy_services_skipped",
			Help: "Services left out of the table because the kernel refused their rules (see their ServiceNotProgrammed Events)."}),
		refusedGauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_proxy_services_with_refused_addresses",
			Help: "Services some of whose externalIPs or load-balancer IPs were refused (node, API server, cluster addresses; outside --external-ip-cidrs)."}),
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_proxy_sync_duration_seconds",
			Help: "Time to compile and apply the proxy table.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}),
		progLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_proxy_network_programming_latency_seconds",
			Help: "From a Service/EndpointSlice change seen by the agent to the datapath applied.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_proxy_syncs_total", Help: "Proxy syncs by result."}, []string{"result"}),
		drifts: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_proxy_table_drifts_total",
			Help: "Times the proxy table was found missing chains, sets or maps it had written (and was rewritten)."}),
		svcGauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_proxy_service_ports", Help: "Service ports programmed."}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_proxy_last_sync_duration_seconds", Help: "Duration of the last successful sync."}),
		fullSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_proxy_last_full_sync_duration_seconds", Help: "Duration of the last full sync."}),
		epGauge:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_proxy_endpoints", Help: "Endpoints programmed."}),
	}
	if reg != nil {
		reg.MustRegister(p.syncDuration, p.progLatency, p.syncs, p.drifts, p.svcGauge, p.epGauge, p.lastSync, p.fullSync, p.refusedGauge, p.skippedGauge)
	}
	svcInf := factory.Core().V1().Services()
	sliceInf := factory.Discovery().V1().EndpointSlices()
	p.services, p.slices = svcInf.Lister(), sliceInf.Lister()
	// Slices by their service, so a partial sync finds a service's slices
	// without scanning all of them.
	_ = sliceInf.Informer().AddIndexers(cache.Indexers{sliceServiceIndex: sliceService})
	p.sliceIndex = sliceInf.Informer().GetIndexer()
	_, _ = svcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.dirty(objectKey(obj)) },
		UpdateFunc: func(_, obj any) { p.dirty(objectKey(obj)) },
		DeleteFunc: func(obj any) { p.dirty(objectKey(obj)) },
	})
	_, _ = sliceInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { p.dirty(sliceServiceKey(obj)) },
		UpdateFunc: func(old, obj any) {
			// A slice relabelled to another service changes both.
			p.dirty(sliceServiceKey(old), sliceServiceKey(obj))
		},
		DeleteFunc: func(obj any) { p.dirty(sliceServiceKey(obj)) },
	})
	return p
}

const sliceServiceIndex = "service"

// sliceService indexes an EndpointSlice by namespace/service-name.
func sliceService(obj any) ([]string, error) {
	if k := sliceServiceKey(obj); k != "" {
		return []string{k}, nil
	}
	return nil, nil
}

func sliceServiceKey(obj any) string {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	sl, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || sl.Labels[discoveryv1.LabelServiceName] == "" {
		return ""
	}
	return sl.Namespace + "/" + sl.Labels[discoveryv1.LabelServiceName]
}

func objectKey(obj any) string {
	k, _ := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	return k
}

// UpdateNode sets this node's zone (for topology hints) and own addresses
// (Config.NodeIPs). Safe to call at any time, from any goroutine: a change
// makes the next sync a full one, so a relabelled zone or a changed
// InternalIP takes effect without an agent restart.
func (p *Proxy) UpdateNode(zone string, ips []net.IP) {
	p.mu.Lock()
	if p.node != nil && p.node.zone == zone && sameIPs(p.node.ips, ips) {
		p.mu.Unlock()
		return
	}
	p.node = &nodeInfo{zone: zone, ips: ips}
	p.nodeChanged = true
	p.mu.Unlock()
	p.dirty()
}

type nodeInfo struct {
	zone string
	ips  []net.IP
}

func sameIPs(a, b []net.IP) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// dirty records changed services (none: only wake the loop) and wakes
// the sync loop.
func (p *Proxy) dirty(keys ...string) {
	p.mu.Lock()
	for _, k := range keys {
		if k == "" {
			continue
		}
		if p.firstDirt.IsZero() {
			p.firstDirt = time.Now()
		}
		p.changed[k] = true
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// pending counts services changed since the last sync.
func (p *Proxy) pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.changed)
}

// Run syncs until ctx ends; informers must have synced.
func (p *Proxy) Run(ctx context.Context) {
	if p.Health != nil && p.Health.Healthy == nil {
		p.Health.Healthy = func() bool { ok, _ := p.healthy(time.Now()); return ok }
	}
	full := time.NewTicker(p.FullEvery)
	defer full.Stop()
	check := time.NewTicker(p.CheckEvery)
	defer check.Stop()
	p.dirty()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-full.C:
		case <-check.C:
			if p.state == nil {
				continue // a full sync is due anyway
			}
			missing, err := p.missingObjects(ctx)
			if err == nil && len(missing) == 0 {
				continue
			}
			p.log.Warn("proxy table drifted; rewriting it", "missing", missing, "err", err)
			p.drifts.Inc()
			p.state = nil
		}
		if err := p.Sync(ctx); err != nil {
			p.syncs.WithLabelValues("error").Inc()
			p.log.Error("proxy sync failed; retrying", "err", err)
			time.AfterFunc(time.Second, func() { p.dirty() })
		} else {
			p.syncs.WithLabelValues("ok").Inc()
		}
		// Coalesce bursts of changes.
		select {
		case <-ctx.Done():
			return
		case <-time.After(p.MinInterval):
		}
	}
}

// notOursSelector selects the Services and EndpointSlices this proxy
// uses, as kube-proxy's informers do for both:
// service.kubernetes.io/service-proxy-name names another proxy;
// service.kubernetes.io/headless marks headless services and their slices.
var notOursSelector = func() labels.Selector {
	sel, err := labels.Parse("!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless")
	if err != nil {
		panic(err)
	}
	return sel
}()

// Sync brings the table up to date: a full sync at start, after a failure
// and every FullEvery; otherwise a partial sync of the services changed
// since the last one.
func (p *Proxy) Sync(ctx context.Context) error {
	start := time.Now()
	p.mu.Lock()
	dirtSince, changed := p.firstDirt, p.changed
	p.firstDirt, p.changed = time.Time{}, map[string]bool{}
	for key := range changed {
		delete(p.skipped, key) // a changed Service gets another chance
	}
	p.skippedGauge.Set(float64(len(p.skipped)))
	if p.nodeChanged {
		// Every service may depend on them (NodePort addresses, topology).
		p.cfg.Zone, p.cfg.NodeIPs = p.node.zone, p.node.ips
		p.nodeChanged = false
		p.state = nil
	}
	p.mu.Unlock()
	if g := p.currentGuard(); g.Key() != p.guardKey {
		// Which addresses every Service may take changed.
		p.guard, p.guardKey = g, g.Key()
		p.state = nil
	}
	full := p.state == nil || time.Since(p.lastFull) >= p.FullEvery
	var err error
	var stale []StaleUDP
	if full {
		stale, err = p.syncFull(ctx)
	} else {
		stale, err = p.syncPartial(ctx, changed)
	}
	if err != nil {
		p.state = nil // the next sync is a full one
		p.mu.Lock()
		if p.firstDirt.IsZero() || (!dirtSince.IsZero() && dirtSince.Before(p.firstDirt)) {
			p.firstDirt = dirtSince
		}
		p.mu.Unlock()
		return err
	}
	p.mu.Lock()
	p.lastUpdated = time.Now()
	p.mu.Unlock()
	p.reportConflicts()
	nports, eps, health := p.state.summary()
	if p.Health != nil {
		p.Health.Update(HealthPorts(health, p.cfg.NodeName))
	}
	if p.CleanConntrack && len(stale) > 0 {
		if n, err := DeleteStaleUDP(p.cfg.Family, stale); err != nil {
			p.log.Warn("stale UDP conntrack cleanup failed", "err", err)
		} else if n > 0 {
			p.log.Info("removed stale UDP conntrack entries", "count", n)
		}
	}
	// The span ends here, after health checks and conntrack, as
	// kube-proxy's sync timer does: the benchmark compares the two.
	took := time.Since(start)
	if full {
		p.lastFull = time.Now()
		p.fullSync.Set(took.Seconds())
	}
	p.syncDuration.Observe(took.Seconds())
	p.lastSync.Set(took.Seconds())
	if !dirtSince.IsZero() {
		p.progLatency.Observe(time.Since(dirtSince).Seconds())
	}
	p.svcGauge.Set(float64(nports))
	p.epGauge.Set(float64(eps))
	if full {
		// A full sync at 10 000 services allocates some hundred MB that
		// are garbage once written; return them to the OS now rather than
		// leave the agent's RSS at the peak until the scavenger gets there.
		debug.FreeOSMemory()
	}
	p.log.Debug("proxy synced", "full", full, "changedServices", len(changed), "servicePorts", nports, "endpoints", eps, "took", time.Since(start))
	return nil
}

// portsOf returns the service ports this proxy programs for one service
// (none when it is gone, headless or owned by another proxy).
func (p *Proxy) portsOf(key string) ([]ServicePort, error) {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	svc, err := p.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		p.admit(key, nil, nil) // forget its refusals
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !notOursSelector.Matches(labels.Set(svc.Labels)) {
		return nil, nil
	}
	objs, err := p.sliceIndex.ByIndex(sliceServiceIndex, key)
	if err != nil {
		return nil, err
	}
	slices := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if sl := o.(*discoveryv1.EndpointSlice); notOursSelector.Matches(labels.Set(sl.Labels)) {
			slices = append(slices, sl)
		}
	}
	return p.admit(key, svc, ServicePortsFor(p.cfg.Family, svc, slices)), nil
}

// syncFull compiles every service and rewrites the table.
func (p *Proxy) syncFull(ctx context.Context) ([]StaleUDP, error) {
	// Services another proxy implementation owns, and headless ones, are
	// not ours (the labels kube-proxy honours).
	svcs, err := p.services.List(notOursSelector)
	if err != nil {
		return nil, err
	}
	// Group all slices by service in one pass.
	allSlices, err := p.slices.List(notOursSelector)
	if err != nil {
		return nil, err
	}
	byService := make(map[string][]*discoveryv1.EndpointSlice, len(svcs))
	for _, sl := range allSlices {
		if k := sliceServiceKey(sl); k != "" {
			byService[k] = append(byService[k], sl)
		}
	}
	st := newTableState(p.cfg)
	all := make(map[string][]ServicePort, len(svcs))
	for _, svc := range svcs {
		key := svc.Namespace + "/" + svc.Name
		if _, skip := p.skipped[key]; !skip {
			all[key] = p.admit(key, svc, ServicePortsFor(p.cfg.Family, svc, byService[key]))
		}
	}
	rules := st.setAll(all)
	for key := range p.refused {
		if _, ok := st.services[key]; !ok {
			p.admit(key, nil, nil) // gone: forget its refusals
		}
	}
	if p.Bulk != nil && !p.recreate {
		err = p.writeBulk(ctx, rules)
	} else {
		err = p.writeWhole(ctx, rules)
	}
	if err != nil {
		// One object the kernel refuses must not freeze the table for
		// all: find it, leave it out, write the rest in one transaction.
		if bad := p.isolate(ctx, st); len(bad) > 0 {
			for key, why := range bad {
				p.skip(key, why)
				st.set(key, nil)
			}
			err = p.writeWhole(ctx, st.ruleset())
		}
	}
	if err != nil {
		p.recreate = true
		return nil, err
	}
	p.recreate = false
	var stale []StaleUDP
	if p.state != nil {
		old, _ := p.state.allPorts()
		now, _ := st.allPorts()
		stale = FindStaleUDP(old, now)
	}
	p.state = st
	return stale, nil
}

// writeWhole deletes and rewrites the table in one nft transaction:
// atomic and independent of what the kernel holds, but nft parses each
// element (seconds at 100k elements). Conntrack keeps established flows.
func (p *Proxy) writeWhole(ctx context.Context, rules *Ruleset) error {
	tx := p.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	rules.Full(tx)
	return p.nft.Run(ctx, tx)
}

// writeBulk rewrites the table in three steps, each consistent on its
// own, so traffic never sees a half-written table: (1) nft: chains and
// rules refilled, new sets and maps added, nothing deleted, so old
// elements still point to existing chains; (2) netlink: every set's and
// map's elements replaced in one batch; (3) nft: chains, sets and maps
// the ruleset does not have (the last agent's, or drift) deleted, now that
// nothing refers to them.
func (p *Proxy) writeBulk(ctx context.Context, rules *Ruleset) error {
	tx := p.nft.NewTransaction()
	rules.Structure(tx)
	if err := p.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("table structure: %w", err)
	}
	if err := p.Bulk.ReplaceElements(rules); err != nil {
		return err
	}
	chains, sets, maps, err := p.Bulk.Objects()
	if err != nil {
		return err
	}
	tx = p.nft.NewTransaction()
	var gone []string
	for _, c := range chains {
		if _, ok := rules.chains[c]; !ok {
			tx.Flush(&knftables.Chain{Name: c})
			gone = append(gone, c)
		}
	}
	for _, c := range gone {
		tx.Delete(&knftables.Chain{Name: c})
	}
	for _, n := range sets {
		if _, ok := rules.sets[n]; !ok {
			tx.Delete(&knftables.Set{Name: n})
		}
	}
	for _, n := range maps {
		if _, ok := rules.maps[n]; !ok {
			tx.Delete(&knftables.Map{Name: n})
		}
	}
	if tx.NumOperations() == 0 {
		return nil
	}
	return p.nft.Run(ctx, tx)
}

// missingObjects names the chains, sets and maps of the fixed and shared
// part of the table that the kernel no longer holds (per-service chains
// and rules are left to the hourly full sync: listing them costs more).
func (p *Proxy) missingObjects(ctx context.Context) ([]string, error) {
	var chains, sets, maps []string
	var err error
	if p.Bulk != nil {
		chains, sets, maps, err = p.Bulk.Objects()
	} else {
		if chains, err = p.nft.List(ctx, "chains"); err == nil {
			if sets, err = p.nft.List(ctx, "sets"); err == nil {
				maps, err = p.nft.List(ctx, "maps")
			}
		}
	}
	if knftables.IsNotFound(err) || errors.Is(err, unix.ENOENT) {
		return []string{"table"}, nil
	}
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, n := range chains {
		have["chain "+n] = true
	}
	for _, n := range sets {
		have["set "+n] = true
	}
	for _, n := range maps {
		have["map "+n] = true
	}
	var missing []string
	for _, m := range []*Ruleset{p.state.base, p.state.sharedM} {
		for n := range m.chains {
			if !have["chain "+n] {
				missing = append(missing, "chain "+n)
			}
		}
		for n := range m.sets {
			if !have["set "+n] {
				missing = append(missing, "set "+n)
			}
		}
		for n := range m.maps {
			if !have["map "+n] {
				missing = append(missing, "map "+n)
			}
		}
	}
	sort.Strings(missing)
	return missing, nil
}

// syncPartial recompiles the changed services only and writes the
// difference.
func (p *Proxy) syncPartial(ctx context.Context, changed map[string]bool) ([]StaleUDP, error) {
	if len(changed) == 0 {
		return nil, nil
	}
	ports := make(map[string][]ServicePort, len(changed))
	for key := range changed {
		sps, err := p.portsOf(key)
		if err != nil {
			return nil, err
		}
		ports[key] = sps
	}
	oldPart, newPart, oldPorts, newPorts := p.state.update(ports)
	tx := p.nft.NewTransaction()
	if newPart.Diff(tx, oldPart) > 0 {
		if err := p.nft.Run(ctx, tx); err != nil {
			return nil, err
		}
	}
	return FindStaleUDP(oldPorts, newPorts), nil
}
