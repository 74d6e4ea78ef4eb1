package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"weft.dev/weft/internal/kubeclient"
)

// ServerConfig configures `weft dns`, the cluster DNS server.
type ServerConfig struct {
	Records   Config
	Listen    string   // host:port for UDP and TCP, e.g. ":53"
	Upstreams []string // resolvers for names outside the zone
	HTTP      string   // /metrics, /healthz, /ready
	// Coalesce is how long API changes are gathered before a new snapshot
	// is built.
	Coalesce time.Duration
	Limits   Limits
}

// Server watches the API and serves DNS.
type Server struct {
	cfg     ServerConfig
	client  kubernetes.Interface
	log     *slog.Logger
	reg     *prometheus.Registry
	Handler *Handler
	metrics *Metrics
}

// NewServer wires a cluster DNS server.
func NewServer(cfg ServerConfig, client kubernetes.Interface, log *slog.Logger) *Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	m := NewMetrics(reg)
	if cfg.Coalesce == 0 {
		cfg.Coalesce = 20 * time.Millisecond
	}
	h := &Handler{Zone: cfg.Records.Zone, Server: "cluster", Metrics: m,
		Forward: &Forwarder{Upstreams: cfg.Upstreams, Timeout: 2 * time.Second},
		Cache:   NewCache(64<<20, 0)}
	cfg.Limits.Apply(h)
	return &Server{cfg: cfg, client: client, log: log, reg: reg, Handler: h, metrics: m}
}

// Run serves until ctx ends. Listeners start at once: names in the zone get
// SERVFAIL until the first snapshot, and /ready fails until then.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 8)
	stopListeners, err := Listen(s.cfg.Listen, s.Handler, errc)
	if err != nil {
		return err
	}
	defer stopListeners()
	if s.cfg.HTTP != "" {
		hs := &http.Server{Addr: s.cfg.HTTP, Handler: s.httpMux(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := hs.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http: %w", err)
			}
		}()
		defer hs.Close()
	}

	factory := informers.NewSharedInformerFactoryWithOptions(s.client, 0, informers.WithTransform(kubeclient.Slim))
	svcInf := factory.Core().V1().Services()
	esInf := factory.Discovery().V1().EndpointSlices()
	podInf := factory.Core().V1().Pods()
	// Only a pod's namespace, IPs and phase matter here; dropping the rest
	// keeps memory flat in big clusters. Pod names are looked up in the
	// informer's indexes when asked for, so pod changes rebuild nothing.
	if err := podInf.Informer().SetTransform(slimPod); err != nil {
		return err
	}
	if err := podInf.Informer().AddIndexers(PodIndexers()); err != nil {
		return err
	}
	pods := PodIndex{Indexer: podInf.Informer().GetIndexer()}
	changed := make(chan struct{}, 1)
	notify := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke(changed) },
		UpdateFunc: func(any, any) { poke(changed) },
		DeleteFunc: func(any) { poke(changed) },
	}
	for _, inf := range []cache.SharedIndexInformer{svcInf.Informer(), esInf.Informer()} {
		if _, err := inf.AddEventHandler(notify); err != nil {
			return err
		}
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), svcInf.Informer().HasSynced, esInf.Informer().HasSynced, podInf.Informer().HasSynced) {
		return ctx.Err()
	}
	build := func() {
		svcs, _ := svcInf.Lister().List(labels.Everything())
		slices, _ := esInf.Lister().List(labels.Everything())
		start := time.Now()
		snap := NewSnapshot(s.cfg.Records, svcs, slices, pods)
		s.Handler.SetSnapshot(snap)
		s.metrics.Records.Set(float64(snap.Names()))
		s.metrics.Syncs.Inc()
		s.log.Debug("snapshot built", "names", snap.Names(), "took", time.Since(start))
	}
	build()
	s.log.Info("serving", "zone", s.cfg.Records.Zone, "listen", s.cfg.Listen, "upstreams", s.cfg.Upstreams)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case <-changed:
			// Gather a burst of changes into one rebuild.
			time.Sleep(s.cfg.Coalesce)
			select {
			case <-changed:
			default:
			}
			build()
		}
	}
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion},
		Status:     corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}, nil
}

func (s *Server) httpMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Handler.Synced() {
			http.Error(w, "not synced with the API server yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Listen starts UDP (one socket per CPU with SO_REUSEPORT, so the kernel
// spreads queries across cores, each served in batches) and TCP servers on
// addr. Serve errors go to errc. stop closes them all.
func Listen(addr string, h *Handler, errc chan<- error) (stop func(), err error) {
	ctx, cancel := context.WithCancel(context.Background())
	var closers []func()
	stop = func() {
		cancel()
		for _, c := range closers {
			c()
		}
	}
	report := func(err error) {
		if err != nil {
			select {
			case errc <- err:
			default:
			}
		}
	}
	for i := 0; i < runtime.NumCPU(); i++ {
		pc, err := listenUDPReusePort(addr)
		if err != nil {
			stop()
			return nil, fmt.Errorf("listen udp %s: %w", addr, err)
		}
		closers = append(closers, func() { _ = pc.Close() })
		go func() { report(serveUDPBatched(ctx, pc.(*net.UDPConn), h)) }()
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		stop()
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	maxConns := h.MaxTCPConns
	if maxConns <= 0 {
		maxConns = DefaultMaxTCPConns
	}
	// Past the cap, new connections wait in the kernel's backlog instead of
	// each costing a goroutine and buffers.
	l = netutil.LimitListener(l, maxConns)
	srv := &dns.Server{Listener: l, Handler: h, ReadTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	closers = append(closers, func() { _ = srv.Shutdown() })
	go func() { report(srv.ActivateAndServe()) }()
	<-started
	return stop, nil
}
