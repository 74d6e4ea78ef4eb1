package bgp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// Deps are what the controller is built from.
type Deps struct {
	NodeName string
	Client   kubernetes.Interface
	Dynamic  dynamic.Interface
	Nodes    cache.SharedIndexInformer
	Services cache.SharedIndexInformer
	Slices   cache.SharedIndexInformer
	// Namespace holds the Secrets that BGPPeers name (weft's own).
	Namespace string
	// Reserved are networks no learned route may cover: the service
	// CIDRs and the underlay subnet (the node's pod CIDRs are added).
	Reserved   []netip.Prefix
	ListenPort int32
	Log        *slog.Logger
	Registry   prometheus.Registerer
}

// Controller keeps GoBGP's sessions and announcements in line with the
// API objects and the kernel's routes in line with GoBGP's best paths.
type Controller struct {
	d       Deps
	kick    chan struct{}
	configs cache.GenericLister
	peers   cache.GenericLister
	cfgInf  cache.SharedIndexInformer
	peerInf cache.SharedIndexInformer

	speaker *Speaker
	asn     uint32
	routes  *RouteTable

	statusMu sync.Mutex
	reported map[string]string // BGPPeer → the status this node last wrote

	sessions  *prometheus.GaugeVec
	announced prometheus.Gauge
}

// New wires a controller; Run starts it.
func New(d Deps) *Controller {
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(d.Dynamic, 10*time.Minute, "", nil)
	c := &Controller{d: d, kick: make(chan struct{}, 1), reported: map[string]string{},
		cfgInf: f.ForResource(ConfigurationResource).Informer(), peerInf: f.ForResource(PeerResource).Informer(),
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "weft_bgp_sessions",
			Help: "BGP sessions of this node by kind and state."}, []string{"kind", "state"}),
		announced: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_bgp_announced_prefixes",
			Help: "Prefixes this node announces (pod CIDRs and service addresses)."}),
	}
	c.configs = cache.NewGenericLister(c.cfgInf.GetIndexer(), ConfigurationResource.GroupResource())
	c.peers = cache.NewGenericLister(c.peerInf.GetIndexer(), PeerResource.GroupResource())
	c.routes = NewRouteTable(d.Log, d.Registry)
	if d.Registry != nil {
		d.Registry.MustRegister(c.sessions, c.announced)
	}
	h := cache.ResourceEventHandlerFuncs{AddFunc: func(any) { c.trigger() }, UpdateFunc: func(_, _ any) { c.trigger() }, DeleteFunc: func(any) { c.trigger() }}
	for _, inf := range []cache.SharedIndexInformer{c.cfgInf, c.peerInf, d.Nodes, d.Services, d.Slices} {
		if inf != nil {
			_, _ = inf.AddEventHandler(h)
		}
	}
	return c
}

// Reserve adds networks no learned route may cover; call before Run.
func (c *Controller) Reserve(p ...netip.Prefix) {
	c.d.Reserved = append(c.d.Reserved, p...)
}

func (c *Controller) trigger() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run syncs on every change and every 30 s until ctx ends. It leaves the
// sessions open when ctx ends: the process exits and peers keep its
// routes for the graceful-restart time.
func (c *Controller) Run(ctx context.Context) error {
	go c.cfgInf.Run(ctx.Done())
	go c.peerInf.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.cfgInf.HasSynced, c.peerInf.HasSynced) {
		return ctx.Err()
	}
	kernel, err := NewKernel()
	if err != nil {
		return err
	}
	defer kernel.Close()
	go c.routes.Run(ctx, kernel)
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	c.trigger()
	for {
		select {
		case <-ctx.Done():
			if c.speaker != nil {
				// Before the process ends: peers hear AdminDown, which
				// RFC 5882 says is no failure of the path.
				c.speaker.CloseBFD()
			}
			return nil
		case <-c.kick:
		case <-t.C:
		}
		if err := c.sync(ctx); err != nil {
			c.d.Log.Warn("bgp sync", "err", err)
			time.AfterFunc(2*time.Second, c.trigger)
		}
	}
}

func (c *Controller) sync(ctx context.Context) error {
	obj, ok, err := c.d.Nodes.GetIndexer().GetByKey(c.d.NodeName)
	if err != nil || !ok {
		return fmt.Errorf("own node %s not found", c.d.NodeName)
	}
	local := NodeFromObject(obj.(*corev1.Node))
	if !local.IP.IsValid() {
		return errors.New("own node has no IPv4 InternalIP (the BGP router ID)")
	}
	cfg := c.configuration()
	if err := c.ensureSpeaker(ctx, cfg, local); err != nil {
		return err
	}
	reserved := append(append([]netip.Prefix{}, c.d.Reserved...), local.PodCIDRs...)
	c.routes.SetReserved(reserved)
	in := Inputs{Local: local, Nodes: c.nodes(), Config: cfg, Peers: c.peerList(), Passwords: c.passwords(ctx)}
	want, problems := PlanNeighbors(in)
	failed := c.speaker.SetNeighbors(ctx, want)
	c.routes.SetSessions(len(want), c.speaker.Established)
	svcs := c.services()
	anns, annProblems := PlanAnnouncements(local, svcs, cfg.ServiceAddresses(), c.hasLocalEndpoint)
	for _, p := range annProblems {
		c.d.Log.Warn("bgp announcement", "err", p)
	}
	err = c.speaker.SetAnnouncements(anns, local.IP, local.IP6)
	c.announced.Set(float64(len(anns)))
	c.writeStatus(ctx, in.Peers, want, problems, failed)
	return err
}

// ensureSpeaker starts GoBGP, or restarts it when the ASN changed.
func (c *Controller) ensureSpeaker(ctx context.Context, cfg Configuration, local Node) error {
	asn := cfg.ClusterASN()
	if c.speaker != nil && c.asn == asn {
		return nil
	}
	if c.speaker != nil {
		c.d.Log.Info("cluster ASN changed: restarting BGP", "from", c.asn, "to", asn)
		c.speaker.Stop()
	}
	sp, err := StartSpeaker(ctx, SpeakerConfig{ASN: asn, RouterID: local.IP, ListenPort: c.d.ListenPort,
		GracefulRestartSeconds: cfg.GracefulRestartSeconds}, c.d.Log, c.routes.Update, c.trigger)
	if err != nil {
		return err
	}
	c.speaker, c.asn = sp, asn
	c.d.Log.Info("BGP speaker started", "asn", asn, "router-id", local.IP)
	return nil
}

func (c *Controller) configuration() Configuration {
	obj, err := c.configs.Get(DefaultConfigurationName)
	if err != nil {
		return Configuration{}
	}
	cfg, err := DecodeConfiguration(obj.(*unstructured.Unstructured))
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		c.d.Log.Warn("BGPConfiguration invalid: using defaults", "err", err)
		return Configuration{}
	}
	return cfg
}

func (c *Controller) nodes() []Node {
	var out []Node
	for _, o := range c.d.Nodes.GetIndexer().List() {
		out = append(out, NodeFromObject(o.(*corev1.Node)))
	}
	return out
}

func (c *Controller) peerList() []Peer {
	objs, _ := c.peers.List(labels.Everything())
	var out []Peer
	for _, o := range objs {
		p, err := DecodePeer(o.(*unstructured.Unstructured))
		if err != nil {
			// Kept with its decode error surfacing through Validate.
			p.Spec = PeerSpec{PeerAddress: "undecodable: " + err.Error()}
		}
		out = append(out, p)
	}
	return out
}

// passwords reads the Secrets that BGPPeers name, in weft's namespace only.
func (c *Controller) passwords(ctx context.Context) map[string]string {
	out := map[string]string{}
	for _, p := range c.peerList() {
		ref := p.Spec.PasswordSecretRef
		if ref == nil || ref.Name == "" {
			continue
		}
		s, err := c.d.Client.CoreV1().Secrets(c.d.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			continue
		}
		if v, ok := s.Data[ref.Key]; ok {
			out[p.Name] = string(v)
		}
	}
	return out
}

func (c *Controller) services() []*corev1.Service {
	if c.d.Services == nil {
		return nil
	}
	var out []*corev1.Service
	for _, o := range c.d.Services.GetIndexer().List() {
		out = append(out, o.(*corev1.Service))
	}
	return out
}

// hasLocalEndpoint reports whether a Service has a ready endpoint on this
// node.
func (c *Controller) hasLocalEndpoint(ns, name string) bool {
	if c.d.Slices == nil {
		return false
	}
	lister := discoverylisters.NewEndpointSliceLister(c.d.Slices.GetIndexer())
	slices, _ := lister.EndpointSlices(ns).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: name}))
	for _, s := range slices {
		for _, ep := range s.Endpoints {
			if ep.NodeName != nil && *ep.NodeName == c.d.NodeName && (ep.Conditions.Ready == nil || *ep.Conditions.Ready) {
				return true
			}
		}
	}
	return false
}

// PeerNodeStatus is what one node reports of one BGPPeer in the peer's
// status.nodes map.
type PeerNodeStatus struct {
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
	BFD     string `json:"bfd,omitempty"`
}

// writeStatus merges this node's view of each BGPPeer into the peer's
// status (a map keyed by node, so nodes never overwrite each other).
func (c *Controller) writeStatus(ctx context.Context, peers []Peer, want map[netip.Addr]Neighbor, problems []Problem, failed map[netip.Addr]error) {
	states, bfdStates := c.speaker.States(), c.speaker.BFDStates()
	byName := map[string]PeerNodeStatus{}
	for addr, n := range want {
		st := PeerNodeStatus{State: states[addr], BFD: bfdStates[addr]}
		if st.State == "" {
			st.State = "Idle"
		}
		if err := failed[addr]; err != nil {
			st = PeerNodeStatus{State: "Error", Message: err.Error()}
		}
		if n.Kind == KindExternal {
			byName[n.Name] = st
		}
	}
	counts := map[[2]string]int{}
	for addr, n := range want {
		counts[[2]string{n.Kind, states[addr]}]++
	}
	c.sessions.Reset()
	for k, v := range counts {
		c.sessions.WithLabelValues(k[0], k[1]).Set(float64(v))
	}
	for _, p := range problems {
		if p.Peer == "" {
			c.d.Log.Warn("BGPConfiguration invalid", "err", p.Err)
			continue
		}
		byName[p.Peer] = PeerNodeStatus{State: "Invalid", Message: p.Err.Error()}
	}
	names := make([]string, 0, len(peers))
	for _, p := range peers {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	for _, name := range names {
		st, mine := byName[name]
		var val any // null removes this node's entry
		if mine {
			val = st
		}
		b, _ := json.Marshal(val)
		c.statusMu.Lock()
		same := c.reported[name] == string(b)
		c.statusMu.Unlock()
		if same {
			continue
		}
		patch, _ := json.Marshal(map[string]any{"status": map[string]any{"nodes": map[string]any{c.d.NodeName: val}}})
		_, err := c.d.Dynamic.Resource(PeerResource).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
		if err != nil && !apierrors.IsNotFound(err) {
			c.d.Log.Warn("BGPPeer status", "peer", name, "err", err)
			continue
		}
		if mine && st.State == "Invalid" {
			c.d.Log.Warn("BGPPeer ignored", "peer", name, "reason", st.Message)
		}
		c.statusMu.Lock()
		c.reported[name] = string(b)
		c.statusMu.Unlock()
	}
}
