// Package agent is the per-node weft agent. This first version configures
// the node for pods: it reads the Node's podCIDRs, writes the CNI conflist
// and the plugin's runtime config, sets the sysctls pods need, keeps the
// egress masquerade table, and serves /healthz and /metrics.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"weft.dev/weft/internal/agent/masq"
	"weft.dev/weft/internal/cni"
)

// Config is the agent's configuration.
type Config struct {
	NodeName       string
	CNIConfDir     string // conflist goes here
	CNIRuntimePath string // runtime config for weft-cni
	CNIDataDir     string // weft-cni's IPAM store
	ClusterCIDRs   []*net.IPNet
	// NoMasquerade lists extra destinations that keep the pod source IP.
	NoMasquerade []*net.IPNet
	MTU          int // 0: detect from the node's underlay interface
	MetricsAddr  string
	ResyncPeriod time.Duration
}

// Agent keeps the node configured.
type Agent struct {
	cfg    Config
	client kubernetes.Interface
	masq   *masq.Writer
	log    *slog.Logger

	syncs      *prometheus.CounterVec
	podCIDRs   *prometheus.GaugeVec
	mtuGauge   prometheus.Gauge
	registry   *prometheus.Registry
	mu         sync.Mutex
	lastSyncOK bool
	kick       chan struct{}
}

// New wires an agent.
func New(cfg Config, client kubernetes.Interface, masqWriter *masq.Writer, log *slog.Logger) *Agent {
	if cfg.ResyncPeriod == 0 {
		cfg.ResyncPeriod = 30 * time.Second
	}
	reg := prometheus.NewRegistry()
	a := &Agent{cfg: cfg, client: client, masq: masqWriter, log: log, registry: reg, kick: make(chan struct{}, 1),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_agent_node_syncs_total",
			Help: "Node configuration syncs by result."}, []string{"result"}),
		podCIDRs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "weft_agent_pod_cidr_info",
			Help: "The node's pod CIDRs as configured for weft-cni."}, []string{"cidr"}),
		mtuGauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_agent_pod_mtu", Help: "MTU handed to pods."}),
	}
	reg.MustRegister(a.syncs, a.podCIDRs, a.mtuGauge, prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return a
}

// Run syncs on every change of this node and every ResyncPeriod.
func (a *Agent) Run(ctx context.Context) error {
	if err := setSysctls(); err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactoryWithOptions(a.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", a.cfg.NodeName).String()
		}))
	nodes := factory.Core().V1().Nodes()
	_, _ = nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.trigger() },
		UpdateFunc: func(any, any) { a.trigger() },
	})
	go a.serveMetrics(ctx)
	factory.Start(ctx.Done())
	cache.WaitForCacheSync(ctx.Done(), nodes.Informer().HasSynced)
	a.log.Info("agent running", "node", a.cfg.NodeName)
	t := time.NewTicker(a.cfg.ResyncPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.kick:
		case <-t.C:
		}
		node, err := nodes.Lister().Get(a.cfg.NodeName)
		if err != nil {
			a.log.Info("waiting for node object", "node", a.cfg.NodeName, "err", err)
			continue
		}
		if err := a.sync(ctx, node); err != nil {
			a.syncs.WithLabelValues("error").Inc()
			a.setHealthy(false)
			a.log.Error("node sync failed", "err", err)
			// Retry soon rather than at the next resync.
			time.AfterFunc(2*time.Second, a.trigger)
			continue
		}
		a.syncs.WithLabelValues("ok").Inc()
		a.setHealthy(true)
	}
}

func (a *Agent) trigger() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *Agent) setHealthy(ok bool) {
	a.mu.Lock()
	a.lastSyncOK = ok
	a.mu.Unlock()
}

// sync writes the node's CNI files and the masquerade table.
func (a *Agent) sync(ctx context.Context, node *corev1.Node) error {
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	if len(cidrs) == 0 {
		return errors.New("node has no podCIDR yet (is kube-controller-manager running with --allocate-node-cidrs?)")
	}
	mtu := a.cfg.MTU
	if mtu == 0 {
		var err error
		if mtu, err = detectMTU(node); err != nil {
			return err
		}
	}
	rc := cni.RuntimeConfig{NodeName: node.Name, PodCIDRs: cidrs, MTU: mtu}
	if err := writeJSONAtomic(a.cfg.CNIRuntimePath, rc); err != nil {
		return err
	}
	conflist := map[string]any{
		"cniVersion": "1.1.0",
		"name":       "weft",
		"plugins": []map[string]any{{
			"type":              "weft-cni",
			"runtimeConfigPath": a.cfg.CNIRuntimePath,
			"dataDir":           a.cfg.CNIDataDir,
		}},
	}
	// The conflist is written last: its appearance tells the runtime the
	// node is ready for pods.
	if err := writeJSONAtomic(filepath.Join(a.cfg.CNIConfDir, "10-weft.conflist"), conflist); err != nil {
		return err
	}
	exempt := append([]*net.IPNet{}, a.cfg.ClusterCIDRs...)
	exempt = append(exempt, a.cfg.NoMasquerade...)
	if err := a.masq.Apply(ctx, masq.Desired{ClusterCIDRs: a.cfg.ClusterCIDRs, Exempt: exempt}); err != nil {
		return fmt.Errorf("masquerade table: %w", err)
	}
	a.podCIDRs.Reset()
	for _, c := range cidrs {
		a.podCIDRs.WithLabelValues(c).Set(1)
	}
	a.mtuGauge.Set(float64(mtu))
	return nil
}

// detectMTU takes the MTU of the interface that holds the node's
// InternalIP. Routed veths add no encapsulation, so pods get the same.
func detectMTU(node *corev1.Node) (int, error) {
	var nodeIP net.IP
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			nodeIP = net.ParseIP(a.Address)
		}
	}
	if nodeIP == nil {
		return 0, errors.New("node has no InternalIP yet")
	}
	links, err := netlink.LinkList()
	if err != nil {
		return 0, err
	}
	for _, l := range links {
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_ALL)
		for _, ad := range addrs {
			if ad.IP.Equal(nodeIP) {
				return l.Attrs().MTU, nil
			}
		}
	}
	return 0, fmt.Errorf("no interface holds the node IP %s", nodeIP)
}

func setSysctls() error {
	for path, val := range map[string]string{
		"/proc/sys/net/ipv4/ip_forward":          "1",
		"/proc/sys/net/ipv6/conf/all/forwarding": "1",
	} {
		if err := os.WriteFile(path, []byte(val), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", path, err)
		}
	}
	return nil
}

func writeJSONAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (a *Agent) serveMetrics(ctx context.Context) {
	if a.cfg.MetricsAddr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		ok := a.lastSyncOK
		a.mu.Unlock()
		if !ok {
			http.Error(w, "node not configured yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ok")
	})
	srv := &http.Server{Addr: a.cfg.MetricsAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error("metrics server", "err", err)
	}
}
