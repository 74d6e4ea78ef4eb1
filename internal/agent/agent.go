// Package agent is the per-node weft agent. It configures the node for
// pods (CNI conflist and the plugin's runtime config, sysctls, the egress
// masquerade table), connects the pod network to every other node through
// the routing backend, and serves /healthz and /metrics.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/knftables"
	cnpv1beta1 "sigs.k8s.io/network-policy-api/apis/v1beta1"
	npaclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"

	"weft.dev/weft/internal/agent/antispoof"
	"weft.dev/weft/internal/agent/hostport"
	"weft.dev/weft/internal/agent/masq"
	"weft.dev/weft/internal/agent/nodedns"
	"weft.dev/weft/internal/agent/reclaim"
	"weft.dev/weft/internal/cni"
	weftdns "weft.dev/weft/internal/dns"
	"weft.dev/weft/internal/fastpath"
	"weft.dev/weft/internal/kubeclient"
	"weft.dev/weft/internal/netpol"
	"weft.dev/weft/internal/proxy"
	"weft.dev/weft/internal/routing"
	"weft.dev/weft/internal/routing/bgp"
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
	// Profiling serves Go's /debug/pprof/ on the metrics address (off by
	// default, as kube-proxy's enableProfiling).
	Profiling    bool
	ResyncPeriod time.Duration
	// Backend connects pod networks across nodes: vxlan, host-gw, auto
	// or bgp.
	Backend string
	// Dynamic reads weft's BGP resources (backend bgp only).
	Dynamic dynamic.Interface
	// PolicyAPI reads ClusterNetworkPolicies (nil: the admin and baseline
	// tiers are off).
	PolicyAPI npaclient.Interface
	// BGPListenPort is where the bgp backend accepts sessions (179).
	BGPListenPort int32
	// Namespace is weft's own, where BGPPeers' password Secrets live.
	Namespace string
	VNI       int
	VXLANPort int
	// Proxy runs the service proxy (the kube-proxy replacement).
	Proxy        bool
	ServiceCIDRs []*net.IPNet
	// NodePortAddresses: where NodePorts are served (empty: the node's
	// InternalIPs; see proxy.Config.NodePortAddresses).
	NodePortAddresses []*net.IPNet
	// ExternalIPCIDRs, when set, limits where Services' externalIPs may lie.
	ExternalIPCIDRs []*net.IPNet
	// ReclaimGrace: how old an unused pod address must be before the agent
	// frees it (0: reclaim.DefaultGrace).
	ReclaimGrace time.Duration
	// Conntrack: the node's conntrack settings the proxy depends on
	// (kube-proxy's defaults: proxy.DefaultConntrack).
	Conntrack proxy.Conntrack
	// NodeLocalDNS, when set, runs the node-local DNS cache on this address,
	// forwarding to ClusterDNS (host:port).
	NodeLocalDNS       net.IP
	ClusterDNS         string
	NodeLocalDNSLimits weftdns.Limits
	// NetworkPolicy enforces NetworkPolicies on this node's pods.
	NetworkPolicy bool
	// PolicyKeepEstablished lets connections opened before a new deny
	// live on (by default every packet is judged by the current policy).
	PolicyKeepEstablished bool
	// FastPath forwards pod-to-pod traffic that no conntrack entry or
	// policy needs past the node's netfilter hooks (package fastpath).
	FastPath bool
}

// VXLANDevice is the name of the agent's VXLAN interface.
const VXLANDevice = "weft.vxlan"

// ConflistName is the file the agent writes into the CNI config dir.
const ConflistName = "10-weft.conflist"

// PolicySocketName: the policy socket, beside weft-cni's runtime config.
const PolicySocketName = "policy.sock"

// CNINetworkName names the network in the conflist (and weft-cni's store).
const CNINetworkName = "weft"

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
	mtu        int
	lastKey    string
	// warnedConntrackMax: the table size could not be set (read-only in a
	// namespace other than the host's); said once.
	warnedConntrackMax bool

	bgp         *bgp.Controller
	fast        *fastpath.Controller
	dp          *routing.Netlink
	local       routing.Local
	underlayIdx int
	underlayMTU int
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

// Run wires the agent's components, each with its own New and Run: the
// service proxies, hostPort, the node-local DNS cache, the routing
// controller, anti-spoofing, the address reclaimer, and the node loop.
func (a *Agent) Run(ctx context.Context) error {
	if err := applySysctls("/proc/sys", hostSysctls("/proc/sys")); err != nil {
		return err
	}
	if err := removeDisabled(ctx, a.cfg); err != nil {
		return err
	}
	switch a.cfg.Backend {
	case routing.BackendVXLAN, routing.BackendHostGW, routing.BackendAuto:
	case routing.BackendBGP:
		if a.cfg.Dynamic == nil {
			return errors.New("backend bgp needs a dynamic API client")
		}
	default:
		return fmt.Errorf("unknown backend %q (want vxlan, host-gw, auto or bgp)", a.cfg.Backend)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(a.client, 0, informers.WithTransform(kubeclient.Slim))
	if a.cfg.Proxy {
		// Only the service proxy reads Services and EndpointSlices here:
		// keep just its part.
		if err := factory.Discovery().V1().EndpointSlices().Informer().SetTransform(proxy.CompactSlice); err != nil {
			return err
		}
		if err := factory.Core().V1().Services().Informer().SetTransform(proxy.CompactService); err != nil {
			return err
		}
	}
	nodes := factory.Core().V1().Nodes()
	if a.cfg.Backend == routing.BackendBGP {
		a.newBGP(factory)
	}
	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: a.client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	// Events on ClusterNetworkPolicies too.
	_ = cnpv1beta1.AddToScheme(scheme.Scheme)
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "weft-agent", Host: a.cfg.NodeName})
	_, _ = nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.trigger() },
		UpdateFunc: func(o, n any) { a.trigger() },
		DeleteFunc: func(any) { a.trigger() },
	})
	svcProxies, err := a.newServiceProxies(factory, recorder)
	if err != nil {
		return err
	}
	for _, p := range svcProxies {
		if p.Health != nil {
			defer p.Health.Close()
		}
	}
	if err := a.startHostPort(ctx, recorder); err != nil {
		return err
	}
	a.newFastPath()
	domains, err := a.startNetworkPolicy(ctx, recorder, nodes.Lister())
	if err != nil {
		return err
	}
	a.startNodeLocalDNS(ctx, domains)
	go a.serveMetrics(ctx)
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())

	local, underlayIdx, underlayMTU, err := a.waitLocal(ctx, nodes.Lister())
	if err != nil {
		return err
	}
	a.runServiceProxies(ctx, svcProxies, nodes)
	if err := a.startRouting(ctx, local, underlayIdx, underlayMTU, nodes, recorder); err != nil {
		return err
	}
	if err := a.runAntiSpoof(ctx, nodes); err != nil {
		return err
	}
	a.runFastPath(ctx, underlayIdx)
	a.startReclaim(ctx)
	return a.nodeLoop(ctx, nodes.Lister(), local)
}

// newServiceProxies makes one service proxy per address family of the
// service CIDRs, as kube-proxy runs on dual-stack nodes; the first
// (primary) family's also serves healthCheckNodePorts and kube-proxy's
// endpoints.
func (a *Agent) newServiceProxies(factory informers.SharedInformerFactory, recorder record.EventRecorder) ([]*proxy.Proxy, error) {
	var svcProxies []*proxy.Proxy
	if a.cfg.Proxy {
		for _, family := range serviceFamilies(a.cfg.ServiceCIDRs) {
			nft, err := knftables.New(knftables.InetFamily, proxy.TableFor(family))
			if err != nil {
				return nil, fmt.Errorf("service proxy (%s): %w", family, err)
			}
			reg := prometheus.WrapRegistererWith(prometheus.Labels{"ip_family": string(family)}, a.registry)
			p := proxy.New(proxy.Config{ClusterCIDRs: a.cfg.ClusterCIDRs, ServiceCIDRs: a.cfg.ServiceCIDRs,
				NodeName: a.cfg.NodeName, Family: family, TCPBeLiberal: a.cfg.Conntrack.TCPBeLiberal,
				NodePortAddresses: a.cfg.NodePortAddresses, ExternalIPCIDRs: a.cfg.ExternalIPCIDRs}, nft, factory, a.log.With("family", family), reg)
			p.CleanConntrack = true
			p.Recorder = recorder
			p.Bulk = &proxy.NetlinkElements{Table: proxy.TableFor(family)}
			if len(svcProxies) == 0 {
				p.Health = proxy.NewHealthServer(a.log)
			}
			svcProxies = append(svcProxies, p)
		}
	}
	return svcProxies, nil
}

// startHostPort runs the hostPorts of pods on this node (the CNI portmap
// plugin's job).
func (a *Agent) startHostPort(ctx context.Context, recorder record.EventRecorder) error {
	nft, err := knftables.New(knftables.InetFamily, hostport.TableName)
	if err != nil {
		return fmt.Errorf("hostPort table: %w", err)
	}
	hp := hostport.New(a.client, a.cfg.NodeName, nft, a.log)
	hp.Recorder = recorder
	go func() {
		if err := hp.Run(ctx); err != nil {
			a.log.Error("hostPort controller stopped", "err", err)
		}
	}()
	return nil
}

// policySocket is where weft-cni asks for a pod's policy before its
// interface comes up; it sits beside the runtime config, one per node.
func (a *Agent) policySocket() string {
	if !a.cfg.NetworkPolicy {
		return ""
	}
	return filepath.Join(filepath.Dir(a.cfg.CNIRuntimePath), PolicySocketName)
}

// startNetworkPolicy runs the NetworkPolicy table and the socket weft-cni
// waits on.
func (a *Agent) startNetworkPolicy(ctx context.Context, recorder record.EventRecorder, nodes listersv1.NodeLister) (*netpol.DomainLearner, error) {
	if !a.cfg.NetworkPolicy {
		return nil, nil
	}
	nft, err := knftables.New(knftables.InetFamily, netpol.TableName)
	if err != nil {
		return nil, fmt.Errorf("NetworkPolicy table: %w", err)
	}
	c := netpol.New(a.client, a.cfg.NodeName, nft, a.log.With("component", "netpol"), a.registry)
	c.KeepEstablished = a.cfg.PolicyKeepEstablished
	c.Recorder = recorder
	if a.fast != nil {
		c.OnWritten = func(js map[netip.Addr]netpol.Judgement) {
			out := make(map[netip.Addr]fastpath.Judged, len(js))
			for ip, j := range js {
				out[ip] = fastpath.Judged{Ingress: j.Ingress, Egress: j.Egress}
			}
			a.fast.SetJudged(out)
		}
		c.OnGeneration = a.fast.SetGeneration
	}
	if a.cfg.PolicyAPI != nil {
		c.WatchClusterPolicies(a.cfg.PolicyAPI)
		c.Status = &netpol.StatusWriter{Kube: a.client, Policies: a.cfg.PolicyAPI, Recorder: recorder,
			Namespace: a.cfg.Namespace, Identity: a.cfg.NodeName, Log: a.log.With("component", "netpol-status")}
		c.Domains = netpol.NewDomainLearner(nft)
		go c.Domains.Run(ctx)
	}
	c.CheckAddresses = func(ips []netip.Addr) error {
		self, err := nodes.Get(a.cfg.NodeName)
		if err != nil {
			return nil // not synced yet: nothing to compare with
		}
		return podAddressesInCIDRs(ips, self)
	}
	go func() {
		if err := c.Run(ctx); err != nil {
			a.log.Error("NetworkPolicy controller stopped", "err", err)
		}
	}()
	go func() {
		if err := c.Serve(ctx, a.policySocket()); err != nil {
			a.log.Error("NetworkPolicy socket", "err", err)
		}
	}()
	return c.Domains, nil
}

// newFastPath loads the fast path's programs when configured; a kernel
// that refuses them leaves pod traffic on the kernel's path.
func (a *Agent) newFastPath() {
	if !a.cfg.FastPath {
		return
	}
	var cidrs []netip.Prefix
	for _, n := range a.cfg.ClusterCIDRs {
		if p, err := netip.ParsePrefix(n.String()); err == nil {
			cidrs = append(cidrs, p)
		}
	}
	d, err := fastpath.Load(cidrs, a.cfg.PolicyKeepEstablished)
	if err != nil {
		a.log.Warn("fast path off: pod traffic takes the kernel's path", "err", err)
		return
	}
	a.fast = fastpath.New(fastpath.Config{Datapath: d, PodPrefix: cni.HostVethPrefix, Uplinks: []string{VXLANDevice}, Tunnel: VXLANDevice,
		Policy: a.cfg.NetworkPolicy, Log: a.log.With("component", "fastpath"), Registry: a.registry})
}

// runFastPath attaches the fast path once the underlay link is known.
func (a *Agent) runFastPath(ctx context.Context, underlayIdx int) {
	if a.fast == nil {
		return
	}
	a.fast.SetUnderlay(underlayIdx)
	go func() {
		if err := a.fast.Run(ctx); err != nil {
			a.log.Error("fast path stopped", "err", err)
		}
	}()
}

// podAddressesInCIDRs refuses pod addresses outside the node's current
// pod CIDRs: a Node deleted and registered again may get another podCIDR,
// and a pod started before the agent rewrote weft-cni's runtime config
// would get an address no route leads to. weft-cni then fails the ADD
// with "try again later" and the runtime retries with the new config.
func podAddressesInCIDRs(ips []netip.Addr, node *corev1.Node) error {
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	var prefixes []netip.Prefix
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil {
			prefixes = append(prefixes, p)
		}
	}
	if len(prefixes) == 0 {
		return nil
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(ip) }) {
			return fmt.Errorf("address %s is outside node %s's pod CIDRs %v: weft-cni's runtime config is stale (the agent rewrites it)", ip, node.Name, cidrs)
		}
	}
	return nil
}

// startNodeLocalDNS runs the node-local DNS cache, when configured.
// Its answers teach the policy's domain-name sets (domains may be nil).
func (a *Agent) startNodeLocalDNS(ctx context.Context, domains *netpol.DomainLearner) {
	if a.cfg.NodeLocalDNS != nil {
		c := nodedns.New(nodedns.Config{Address: a.cfg.NodeLocalDNS, ClusterDNS: a.cfg.ClusterDNS, Limits: a.cfg.NodeLocalDNSLimits,
			PodInterfaces: cni.HostVethPrefix, Tunnel: VXLANDevice}, weftdns.NewMetrics(a.registry), a.log)
		if domains != nil {
			c.Handler.Observe = domains.Observe
		}
		go func() {
			// A cache that fails must not take the pod network down with it:
			// report and retry.
			for ctx.Err() == nil {
				if err := c.Run(ctx); err != nil {
					a.log.Error("node-local DNS cache", "err", err)
					time.Sleep(2 * time.Second)
				}
			}
		}()
	}
}

// runServiceProxies starts the proxies, following this node's zone label
// and addresses (kube-proxy follows its Node's topology labels too) and
// every node's addresses, which no Service may take.
func (a *Agent) runServiceProxies(ctx context.Context, svcProxies []*proxy.Proxy, nodes coreinformers.NodeInformer) {
	updateProxies := func(obj any) {
		self, ok := obj.(*corev1.Node)
		if !ok || self.Name != a.cfg.NodeName {
			return
		}
		own := routing.PeerFromNode(self)
		nodeIPs := []net.IP{own.NodeIP, own.NodeIP6}
		for _, p := range svcProxies {
			p.UpdateNode(self.Labels[corev1.LabelTopologyZone], nodeIPs)
			if p.Health != nil {
				p.Health.SetAddresses(proxy.HealthAddresses(a.cfg.NodePortAddresses, nodeIPs, localAddresses()))
			}
		}
	}
	if self, err := nodes.Lister().Get(a.cfg.NodeName); err == nil {
		updateProxies(self)
	}
	// No Service may take any node's address as an external address.
	updateNodeAddresses := func(any) {
		all, _ := nodes.Lister().List(labels.Everything())
		addrs := proxy.NodeAddresses(all)
		for _, p := range svcProxies {
			p.SetNodeAddresses(addrs)
		}
	}
	updateNodeAddresses(nil)
	if len(svcProxies) > 0 {
		_, _ = nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { updateProxies(obj); updateNodeAddresses(obj) },
			UpdateFunc: func(_, obj any) { updateProxies(obj); updateNodeAddresses(obj) },
			DeleteFunc: updateNodeAddresses,
		})
	}
	for i, p := range svcProxies {
		go p.Run(ctx)
		if i > 0 {
			continue
		}
		go func() {
			if err := p.ServeCompat(ctx, proxy.KubeProxyHealthzAddr, proxy.KubeProxyStatusAddr); err != nil {
				a.log.Error("kube-proxy compatible endpoints", "err", err)
			}
		}()
	}
}

// startRouting sets up this node's end of the pod network (MTU, VXLAN
// device) and runs the controller that routes to every peer.
func (a *Agent) startRouting(ctx context.Context, local routing.Local, underlayIdx, underlayMTU int, nodes coreinformers.NodeInformer, recorder record.EventRecorder) error {
	a.mtu = a.cfg.MTU
	if a.mtu == 0 {
		a.mtu = routing.MTUFor(a.cfg.Backend, underlayMTU)
	}
	dp := routing.NewNetlink(VXLANDevice, underlayIdx)
	a.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "weft_routing_netlink_writes_total",
		Help: "Route, neighbour, FDB and device writes of the pod network; flat while no peer changes."}, func() float64 { return float64(dp.Writes()) }))
	a.dp, a.local, a.underlayIdx, a.underlayMTU = dp, local, underlayIdx, underlayMTU
	if !routing.UsesVXLAN(a.cfg.Backend) {
		if l, err := netlink.LinkByName(VXLANDevice); err == nil {
			// Switched to host-gw or bgp: the device of an earlier backend goes.
			_ = netlink.LinkDel(l)
		}
	}
	self, _ := nodes.Lister().Get(a.cfg.NodeName)
	if err := a.ensureLocal(ctx, self); err != nil {
		return err
	}
	if a.cfg.Backend == routing.BackendBGP {
		if u, err := netip.ParsePrefix(local.Underlay.String()); err == nil {
			a.bgp.Reserve(u)
		}
		go func() {
			if err := a.bgp.Run(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("bgp backend stopped", "err", err)
			}
		}()
		return nil
	}
	ctrl := routing.NewController(local, dp, nodes.Lister(), recorder, a.log, a.registry)
	_, _ = nodes.Informer().AddEventHandler(ctrl.Handler())
	go ctrl.Run(ctx)
	return nil
}

// newBGP wires the bgp backend's controller on the agent's informers
// (before they start, so they are started with the factory).
func (a *Agent) newBGP(factory informers.SharedInformerFactory) {
	reserved := []netip.Prefix{}
	for _, n := range a.cfg.ServiceCIDRs {
		if p, err := netip.ParsePrefix(n.String()); err == nil {
			reserved = append(reserved, p)
		}
	}
	a.bgp = bgp.New(bgp.Deps{NodeName: a.cfg.NodeName, Client: a.client, Dynamic: a.cfg.Dynamic,
		Nodes: factory.Core().V1().Nodes().Informer(), Services: factory.Core().V1().Services().Informer(),
		Slices: factory.Discovery().V1().EndpointSlices().Informer(), Namespace: a.cfg.Namespace,
		Reserved: reserved, ListenPort: a.cfg.BGPListenPort, Log: a.log.With("component", "bgp"), Registry: a.registry})
}

// startReclaim runs the reclaimer of pod addresses no pod uses.
func (a *Agent) startReclaim(ctx context.Context) {
	linkExists := func(name string) bool { _, err := netlink.LinkByName(name); return err == nil }
	rc := reclaim.New(a.client, a.cfg.NodeName, a.cfg.CNIDataDir, CNINetworkName, linkExists, a.log, a.registry)
	if a.cfg.ReclaimGrace > 0 {
		rc.Grace, rc.Every = a.cfg.ReclaimGrace, max(a.cfg.ReclaimGrace/2, time.Second)
	}
	go rc.Run(ctx)

}

// nodeLoop keeps this node configured for pods (CNI files, masquerade,
// sysctls, VXLAN device) on every Node change and every ResyncPeriod.
func (a *Agent) nodeLoop(ctx context.Context, lister listersv1.NodeLister, local routing.Local) error {
	a.log.Info("agent running", "node", a.cfg.NodeName, "backend", a.cfg.Backend, "mtu", a.mtu, "underlay", local.Underlay)
	t := time.NewTicker(a.cfg.ResyncPeriod)
	defer t.Stop()
	a.trigger()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.kick:
		case <-t.C:
			a.lastKey = "" // periodic full sync
		}
		node, err := lister.Get(a.cfg.NodeName)
		if err != nil {
			a.log.Info("waiting for node object", "node", a.cfg.NodeName, "err", err)
			continue
		}
		all, _ := lister.List(labels.Everything())
		if a.cfg.Proxy {
			// Every pass, so a value changed by hand comes back. Before the
			// proxy's first sync loads conntrack the files may be missing.
			if err := proxy.ApplySysctls("/proc/sys/net/netfilter", a.cfg.Conntrack.Sysctls()); err != nil {
				a.log.Warn("conntrack settings", "err", err)
			}
			if err := raiseConntrackMax("/proc/sys", a.cfg.Conntrack.Max(runtime.NumCPU())); err != nil && !a.warnedConntrackMax {
				a.warnedConntrackMax = true // read-only outside the host's namespace: say so once
				a.log.Warn("conntrack table size", "err", err)
			}
		}
		err = a.ensureLocal(ctx, node)
		if err == nil {
			err = a.sync(ctx, node, all)
		}
		if err != nil {
			a.syncs.WithLabelValues("error").Inc()
			a.setHealthy(false)
			a.lastKey = ""
			a.log.Error("node sync failed", "err", err)
			// Retry soon rather than at the next resync.
			time.AfterFunc(2*time.Second, a.trigger)
			continue
		}
		a.syncs.WithLabelValues("ok").Inc()
		a.setHealthy(true)
	}
}

// waitLocal waits until this node has an InternalIP and a podCIDR and
// finds its underlay interface.
func (a *Agent) waitLocal(ctx context.Context, lister listersv1.NodeLister) (routing.Local, int, int, error) {
	for {
		if n, err := lister.Get(a.cfg.NodeName); err == nil {
			p := routing.PeerFromNode(n)
			if p.NodeIP != nil && len(p.PodCIDRs) > 0 {
				idx, mtu, subnet, err := routing.Underlay(p.NodeIP)
				if err == nil {
					return routing.Local{Name: a.cfg.NodeName, NodeIP: p.NodeIP, Underlay: subnet, Backend: a.cfg.Backend,
						ClusterCIDRs: a.cfg.ClusterCIDRs, Reserved: append(append([]*net.IPNet{}, p.PodCIDRs...), a.cfg.ServiceCIDRs...)}, idx, mtu, nil
				}
				// Not fatal: the interface may be coming up, or a dump
				// was interrupted by pods coming and going.
				a.log.Warn("underlay interface not found yet", "ip", p.NodeIP, "err", err)
			} else {
				a.log.Info("waiting for node InternalIP and podCIDR", "node", a.cfg.NodeName)
			}
		}
		select {
		case <-ctx.Done():
			return routing.Local{}, 0, 0, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// ensureLocal keeps this node's own side of the pod network right: the
// VXLAN device with the VTEP address of the current podCIDR, and the
// annotations peers read. It runs at start and on every own-node change
// (a Node deleted and re-registered comes back without annotations and
// maybe with another podCIDR).
func (a *Agent) ensureLocal(ctx context.Context, self *corev1.Node) error {
	if self == nil {
		return errors.New("own node not found")
	}
	if routing.UsesVXLAN(a.cfg.Backend) {
		cidrs := routing.PeerFromNode(self).PodCIDRs
		vtep := routing.VTEPAddress(cidrs)
		if vtep == nil {
			return errors.New("VXLAN needs an IPv4 podCIDR on this node")
		}
		err := a.dp.EnsureVXLAN(routing.VXLANConfig{Name: VXLANDevice, VNI: a.cfg.VNI, Port: a.cfg.VXLANPort,
			LocalIP: a.local.NodeIP, MTU: a.underlayMTU - routing.VXLANOverhead, MAC: routing.VTEPMAC(a.cfg.NodeName),
			VTEPIP: vtep, VTEPIP6: routing.VTEPAddress6(cidrs), Underlay: a.underlayIdx})
		if err != nil {
			return fmt.Errorf("vxlan device: %w", err)
		}
	}
	want := a.cfg.Backend
	if self.Annotations[routing.AnnotationBackend] == want &&
		(!routing.UsesVXLAN(want) || self.Annotations[routing.AnnotationVTEPMAC] == routing.VTEPMAC(a.cfg.NodeName).String()) {
		return nil
	}
	if err := a.publish(ctx, a.local); err != nil {
		return fmt.Errorf("publish node annotations: %w", err)
	}
	return nil
}

// publish writes the VTEP annotations peers need to reach this node.
func (a *Agent) publish(ctx context.Context, local routing.Local) error {
	ann := map[string]any{routing.AnnotationBackend: a.cfg.Backend}
	if routing.UsesVXLAN(a.cfg.Backend) {
		ann[routing.AnnotationVTEPMAC] = routing.VTEPMAC(a.cfg.NodeName).String()
		ann[routing.AnnotationVTEPIP] = local.NodeIP.String()
	} else {
		ann[routing.AnnotationVTEPMAC] = nil
		ann[routing.AnnotationVTEPIP] = nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	_, err := a.client.CoreV1().Nodes().Patch(ctx, a.cfg.NodeName, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
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
func (a *Agent) sync(ctx context.Context, node *corev1.Node, all []*corev1.Node) error {
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	if len(cidrs) == 0 {
		return errors.New("node has no podCIDR yet (is kube-controller-manager running with --allocate-node-cidrs?)")
	}
	mtu := a.mtu
	// Pod to node inside the cluster keeps the pod's address.
	exempt := append([]*net.IPNet{}, a.cfg.ClusterCIDRs...)
	exempt = append(exempt, a.cfg.NoMasquerade...)
	exempt = append(exempt, nodeAddresses(all)...)
	key := fmt.Sprint(cidrs, mtu, exempt)
	if key == a.lastKey {
		return nil
	}
	rc := cni.RuntimeConfig{NodeName: node.Name, PodCIDRs: cidrs, MTU: mtu, PolicySocket: a.policySocket()}
	if err := writeJSONAtomic(a.cfg.CNIRuntimePath, rc); err != nil {
		return err
	}
	conflist := map[string]any{
		"cniVersion": "1.1.0",
		"name":       CNINetworkName,
		"plugins": []map[string]any{{
			"type":              "weft-cni",
			"runtimeConfigPath": a.cfg.CNIRuntimePath,
			"dataDir":           a.cfg.CNIDataDir,
		}},
	}
	// The conflist is written last: its appearance tells the runtime the
	// node is ready for pods.
	if err := writeJSONAtomic(filepath.Join(a.cfg.CNIConfDir, ConflistName), conflist); err != nil {
		return err
	}
	if err := a.masq.Apply(ctx, masq.Desired{ClusterCIDRs: a.cfg.ClusterCIDRs, Exempt: exempt}); err != nil {
		return fmt.Errorf("masquerade table: %w", err)
	}
	a.podCIDRs.Reset()
	for _, c := range cidrs {
		a.podCIDRs.WithLabelValues(c).Set(1)
	}
	a.mtuGauge.Set(float64(mtu))
	a.lastKey = key
	return nil
}

// runAntiSpoof starts the table that keeps pods to their own source
// addresses and VXLAN to frames from nodes.
func (a *Agent) runAntiSpoof(ctx context.Context, nodes coreinformers.NodeInformer) error {
	nft, err := knftables.New(knftables.InetFamily, antispoof.TableName)
	if err != nil {
		return fmt.Errorf("anti-spoofing table: %w", err)
	}
	c := antispoof.New(antispoof.Config{PodInterfaces: cni.HostVethPrefix, Tunnel: VXLANDevice, VXLANPort: a.cfg.VXLANPort,
		VTEPAnnotation: routing.AnnotationVTEPIP}, nft, nodes.Lister(), a.log)
	if _, err := nodes.Informer().AddEventHandler(c.Handler()); err != nil {
		return err
	}
	go func() { _ = c.Run(ctx) }()
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
	if a.cfg.Profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	}
	srv := &http.Server{Addr: a.cfg.MetricsAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error("metrics server", "err", err)
	}
}

// serviceFamilies lists the address families of the service CIDRs, the
// first one's first (IPv4 alone when none is configured).
func serviceFamilies(cidrs []*net.IPNet) []corev1.IPFamily {
	var out []corev1.IPFamily
	seen := map[corev1.IPFamily]bool{}
	for _, c := range cidrs {
		f := corev1.IPv4Protocol
		if c.IP.To4() == nil {
			f = corev1.IPv6Protocol
		}
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		out = []corev1.IPFamily{corev1.IPv4Protocol}
	}
	return out
}

// nodeAddresses are the InternalIPs of every node, IPv4 and (on a
// dual-stack cluster) IPv6, as host routes: pod to node traffic keeps the
// pod's address in both families.
func nodeAddresses(nodes []*corev1.Node) []*net.IPNet {
	var out []*net.IPNet
	for _, n := range nodes {
		p := routing.PeerFromNode(n)
		for _, ip := range []net.IP{p.NodeIP, p.NodeIP6} {
			if ip == nil {
				continue
			}
			bits := 32
			if ip.To4() == nil {
				bits = 128
			}
			out = append(out, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
		}
	}
	return out
}

// localAddresses lists the addresses of this node's interfaces (for
// --nodeport-addresses CIDRs); nil if they cannot be read.
func localAddresses() []net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			out = append(out, n.IP)
		}
	}
	return out
}
