package proxy

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	listersv1 "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
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
	log         *slog.Logger
	MinInterval time.Duration
	FullEvery   time.Duration

	// Health serves healthCheckNodePorts; nil disables them.
	Health *HealthServer

	// CleanConntrack deletes stale UDP conntrack entries after syncs.
	CleanConntrack bool
	lastPorts      []ServicePort
	// The model last written; nil forces a full sync.
	prev     *Model
	lastFull time.Time

	kick      chan struct{}
	mu        sync.Mutex
	firstDirt time.Time // earliest unsynced change, for the latency metric
	// lastUpdated is when a sync last succeeded (kube-proxy's /healthz).
	lastUpdated time.Time

	syncDuration prometheus.Histogram
	progLatency  prometheus.Histogram
	syncs        *prometheus.CounterVec
	lastSync     prometheus.Gauge
	fullSync     prometheus.Gauge
	svcGauge     prometheus.Gauge
	epGauge      prometheus.Gauge
}

// New wires a proxy on a shared informer factory; call Run after Start.
func New(cfg Config, nft knftables.Interface, factory informers.SharedInformerFactory, log *slog.Logger, reg prometheus.Registerer) *Proxy {
	p := &Proxy{cfg: cfg, nft: nft, log: log, MinInterval: 100 * time.Millisecond, FullEvery: time.Hour,
		kick: make(chan struct{}, 1),
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_proxy_sync_duration_seconds",
			Help: "Time to compile and apply the proxy table.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}),
		progLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_proxy_network_programming_latency_seconds",
			Help: "From a Service/EndpointSlice change seen by the agent to the datapath applied.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}),
		syncs:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_proxy_syncs_total", Help: "Proxy syncs by result."}, []string{"result"}),
		svcGauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_proxy_service_ports", Help: "Service ports programmed."}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_proxy_last_sync_duration_seconds", Help: "Duration of the last successful sync."}),
		fullSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_proxy_last_full_sync_duration_seconds", Help: "Duration of the last full sync."}),
		epGauge:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_proxy_endpoints", Help: "Endpoints programmed."}),
	}
	if reg != nil {
		reg.MustRegister(p.syncDuration, p.progLatency, p.syncs, p.svcGauge, p.epGauge, p.lastSync, p.fullSync)
	}
	svcInf := factory.Core().V1().Services()
	sliceInf := factory.Discovery().V1().EndpointSlices()
	p.services, p.slices = svcInf.Lister(), sliceInf.Lister()
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { p.dirty() },
		UpdateFunc: func(any, any) { p.dirty() },
		DeleteFunc: func(any) { p.dirty() },
	}
	_, _ = svcInf.Informer().AddEventHandler(h)
	_, _ = sliceInf.Informer().AddEventHandler(h)
	return p
}

// SetZone sets this node's zone (for topology hints); call before Run.
func (p *Proxy) SetZone(zone string) { p.cfg.Zone = zone }

func (p *Proxy) dirty() {
	p.mu.Lock()
	if p.firstDirt.IsZero() {
		p.firstDirt = time.Now()
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Run syncs until ctx ends; informers must have synced.
func (p *Proxy) Run(ctx context.Context) {
	full := time.NewTicker(p.FullEvery)
	defer full.Stop()
	p.dirty()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-full.C:
		}
		if err := p.Sync(ctx); err != nil {
			p.syncs.WithLabelValues("error").Inc()
			p.log.Error("proxy sync failed; retrying", "err", err)
			time.AfterFunc(time.Second, p.dirty)
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

// notOursSelector selects the services this proxy programs:
// service.kubernetes.io/service-proxy-name names another proxy;
// service.kubernetes.io/headless marks headless services.
var notOursSelector = func() labels.Selector {
	sel, err := labels.Parse("!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless")
	if err != nil {
		panic(err)
	}
	return sel
}()

// Sync compiles the current state and applies it in one transaction.
func (p *Proxy) Sync(ctx context.Context) error {
	start := time.Now()
	p.mu.Lock()
	dirtSince := p.firstDirt
	p.firstDirt = time.Time{}
	p.mu.Unlock()
	// Services another proxy implementation owns, and headless ones, are
	// not ours (the labels kube-proxy honours).
	svcs, err := p.services.List(notOursSelector)
	if err != nil {
		return err
	}
	// Group all slices by service once: a label-selector list per service
	// would make each sync quadratic in the number of services.
	allSlices, err := p.slices.List(labels.Everything())
	if err != nil {
		return err
	}
	byService := make(map[string][]*discoveryv1.EndpointSlice, len(svcs))
	for _, sl := range allSlices {
		if name := sl.Labels[discoveryv1.LabelServiceName]; name != "" {
			byService[sl.Namespace+"/"+name] = append(byService[sl.Namespace+"/"+name], sl)
		}
	}
	var ports []ServicePort
	eps := 0
	for _, svc := range svcs {
		for _, sp := range ServicePorts(svc, byService[svc.Namespace+"/"+svc.Name]) {
			ports = append(ports, sp)
			eps += len(sp.Endpoints)
		}
	}
	model := Compile(p.cfg, ports)
	tx := p.nft.NewTransaction()
	full := p.prev == nil || time.Since(p.lastFull) >= p.FullEvery
	switch {
	case p.prev == nil:
		// Start, or after a failure: what the kernel holds is unknown.
		// Recreate the table in the same transaction (atomic, and no slow
		// listing of a large table); conntrack keeps established flows.
		tx.Add(&knftables.Table{})
		tx.Delete(&knftables.Table{})
		model.Full(tx)
	case full:
		// Periodic full sync: flush and rewrite; chains and sets of the
		// last model that are gone are empty after the flush.
		model.Full(tx)
		for c := range p.prev.chains {
			if _, ok := model.chains[c]; !ok {
				tx.Delete(&knftables.Chain{Name: c})
			}
		}
		for s := range p.prev.sets {
			if _, ok := model.sets[s]; !ok {
				tx.Delete(&knftables.Set{Name: s})
			}
		}
		for mp := range p.prev.maps {
			if _, ok := model.maps[mp]; !ok {
				tx.Delete(&knftables.Map{Name: mp})
			}
		}
	default:
		if model.Diff(tx, p.prev) == 0 {
			p.prev = model
			return nil
		}
	}
	if err := p.nft.Run(ctx, tx); err != nil {
		p.prev = nil // the next sync is a full one
		p.mu.Lock()
		if p.firstDirt.IsZero() || (!dirtSince.IsZero() && dirtSince.Before(p.firstDirt)) {
			p.firstDirt = dirtSince
		}
		p.mu.Unlock()
		return err
	}
	p.prev = model
	p.mu.Lock()
	p.lastUpdated = time.Now()
	p.mu.Unlock()
	if full {
		p.lastFull = time.Now()
		p.fullSync.Set(time.Since(start).Seconds())
	}
	p.syncDuration.Observe(time.Since(start).Seconds())
	p.lastSync.Set(time.Since(start).Seconds())
	if !dirtSince.IsZero() {
		p.progLatency.Observe(time.Since(dirtSince).Seconds())
	}
	if p.Health != nil {
		p.Health.Update(HealthPorts(ports, p.cfg.NodeName))
	}
	if p.CleanConntrack {
		if n, err := DeleteStaleUDP(FindStaleUDP(p.lastPorts, ports)); err != nil {
			p.log.Warn("stale UDP conntrack cleanup failed", "err", err)
		} else if n > 0 {
			p.log.Info("removed stale UDP conntrack entries", "count", n)
		}
	}
	p.lastPorts = ports
	p.svcGauge.Set(float64(len(ports)))
	p.epGauge.Set(float64(eps))
	p.log.Debug("proxy synced", "servicePorts", len(ports), "endpoints", eps, "took", time.Since(start))
	return nil
}

func toSet(list []string) map[string]bool {
	m := make(map[string]bool, len(list))
	for _, x := range list {
		m[x] = true
	}
	return m
}
