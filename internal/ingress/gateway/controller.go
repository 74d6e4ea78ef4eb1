package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"os"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/prometheus/client_golang/prometheus"

	"weft.dev/weft/internal/ingress/controller"
	"weft.dev/weft/internal/ingress/proxy"
	"weft.dev/weft/internal/kubeclient"
)

// Config says where the proxy's pods are, to which the Gateways'
// LoadBalancer Services send.
type Config struct {
	// Namespace of the proxy's pods (and its Lease).
	Namespace string
	// Selector picks the proxy's pods.
	Selector map[string]string
	// Metrics registers the controller's metrics (nil: none).
	Metrics prometheus.Registerer
}

// Controller serves the Gateway API: it waits for the API's CRDs, then
// keeps the proxy's Gateway ports, each Gateway's Service and every
// status current.
type Controller struct {
	cfg     Config
	client  kubernetes.Interface
	gw      gwclient.Interface
	log     *slog.Logger
	changed func() // the ingress controller's Kick

	ports   atomic.Pointer[map[int]*proxy.Port]
	trigger chan struct{}
	secrets *controller.NamedWatch
	// configMaps: the CA certificates Gateways name (client validation).
	configMaps *controller.NamedWatch

	// leader: this replica holds the Lease and writes Services and
	// status; the others serve what the leader wrote.
	leader   atomic.Bool
	retrying atomic.Bool
	// statuses: the latest statuses to write, taken by the status writer
	// (a sync never waits for the API server's answers).
	statuses atomic.Pointer[statusJob]
	written  chan struct{}
	// recent are the Gateway Services this replica wrote, until its
	// informer has them (used by the sync goroutine only).
	recent map[string]*corev1.Service
	// syncSeconds times each stage of a sync: what a route change waits
	// for before the proxy serves it.
	syncSeconds *prometheus.HistogramVec
	// compiles counts routes compiled and reused from the memo: a sync
	// that compiles every route again says the world keeps changing.
	compiles *prometheus.CounterVec
	// kickedAt: when the first change since the last sync began arrived
	// (unix ns; 0: none), for the "wait" stage.
	kickedAt atomic.Int64
	// world counts changes to anything but routes (Input.World); memo
	// keeps compiled routes while it stands still.
	world atomic.Uint64
	memo  Memo
}

type statusJob struct {
	in  Input
	res *Result
}

// Lease is the Lease the replicas compete for, in Config.Namespace.
const Lease = "weft-gateway"

// New wires a controller; changed is called when the ports change.
func New(cfg Config, client kubernetes.Interface, gw gwclient.Interface, log *slog.Logger, changed func()) *Controller {
	c := &Controller{cfg: cfg, client: client, gw: gw, log: log, changed: changed, trigger: make(chan struct{}, 1), written: make(chan struct{}, 1),
		recent: map[string]*corev1.Service{}}
	c.syncSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "weft_gateway_sync_duration_seconds",
		Help:    "Time of each stage of a Gateway API sync (wait: a change waiting for the sync before it to end; read: informers to input; services: Gateway Services; build: the proxy's ports; swap: the proxy's new snapshot; statuses: route and policy statuses, after the swap).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"stage"})
	c.compiles = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_gateway_route_compiles_total",
		Help: "Routes a Gateway API sync compiled (memo=\"miss\": new, edited, or everything after a change to Services, grants, Gateways, namespaces, policies or certificates) or took as compiled before (memo=\"hit\")."}, []string{"memo"})
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(c.syncSeconds, c.compiles)
	}
	empty := map[int]*proxy.Port{}
	c.ports.Store(&empty)
	c.secrets = controller.NewNamedWatch(client.CoreV1().RESTClient(), "secrets", func() runtime.Object { return &corev1.Secret{} }, c.worldChanged)
	c.configMaps = controller.NewNamedWatch(client.CoreV1().RESTClient(), "configmaps", func() runtime.Object { return &corev1.ConfigMap{} }, c.worldChanged)
	return c
}

// Ports are the proxy ports the Gateways' listeners are served on.
func (c *Controller) Ports() map[int]*proxy.Port { return *c.ports.Load() }

func (c *Controller) kick() {
	c.kickedAt.CompareAndSwap(0, time.Now().UnixNano())
	select {
	case c.trigger <- struct{}{}:
	default:
	}
}

// worldChanged: something routes are compiled from changed (the store
// already has it), so the next sync compiles every route again.
func (c *Controller) worldChanged() {
	c.world.Add(1)
	c.kick()
}

// Run waits until the API server serves Gateways, then syncs on every
// change until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	for !c.served("gateways") {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(10 * time.Second):
		}
	}
	c.log.Info("Gateway API served: watching Gateways")
	go c.lead(ctx)
	go c.writeStatuses(ctx)
	// Cached objects without managedFields: at thousands of routes they
	// would be most of the cache, and no sync reads them.
	gf := gwinformers.NewSharedInformerFactoryWithOptions(c.gw, 0, gwinformers.WithTransform(kubeclient.Slim))
	kf := informers.NewSharedInformerFactoryWithOptions(c.client, 0, informers.WithTransform(kubeclient.Slim))
	w := &watched{
		classes: gf.Gateway().V1().GatewayClasses().Informer(), gateways: gf.Gateway().V1().Gateways().Informer(),
		routes: gf.Gateway().V1().HTTPRoutes().Informer(), grants: gf.Gateway().V1().ReferenceGrants().Informer(),
		namespaces: kf.Core().V1().Namespaces().Informer(), services: kf.Core().V1().Services().Lister(),
	}
	infs := []cache.SharedIndexInformer{w.classes, w.gateways, w.routes, w.grants, w.namespaces, kf.Core().V1().Services().Informer()}
	// The proxy's own pods, which the Gateways' EndpointSlices name, and
	// those slices.
	pf := informers.NewSharedInformerFactoryWithOptions(c.client, 0, informers.WithNamespace(c.cfg.Namespace), informers.WithTransform(kubeclient.Slim),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = labels.SelectorFromSet(c.cfg.Selector).String() }))
	sf := informers.NewSharedInformerFactoryWithOptions(c.client, 0, informers.WithTransform(keepSlice),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = discoveryv1.LabelManagedBy + "=" + ManagedBy }))
	w.pods, w.slices = pf.Core().V1().Pods().Lister(), sf.Discovery().V1().EndpointSlices().Lister()
	podInformer := pf.Core().V1().Pods().Informer()
	_, _ = podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { c.kick() }, UpdateFunc: func(any, any) { c.kick() }, DeleteFunc: func(any) { c.kick() }})
	_ = sf.Discovery().V1().EndpointSlices().Informer()
	if c.served("grpcroutes") { // a cluster may have installed the Gateway API without it
		w.grpc = gf.Gateway().V1().GRPCRoutes().Informer()
		infs = append(infs, w.grpc)
	}
	if c.served("tlsroutes") {
		w.tls = gf.Gateway().V1().TLSRoutes().Informer()
		infs = append(infs, w.tls)
	}
	if c.served("listenersets") {
		w.sets = gf.Gateway().V1().ListenerSets().Informer()
		infs = append(infs, w.sets)
	}
	if c.served("backendtlspolicies") {
		w.policies = gf.Gateway().V1().BackendTLSPolicies().Informer()
		infs = append(infs, w.policies)
	}
	for _, inf := range infs {
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(o any) { c.changedObject(o) }, UpdateFunc: c.updated, DeleteFunc: func(o any) { c.changedObject(o) }})
	}
	for _, f := range []interface {
		Start(<-chan struct{})
	}{gf, kf, pf, sf} {
		f.Start(ctx.Done())
	}
	gf.WaitForCacheSync(ctx.Done())
	kf.WaitForCacheSync(ctx.Done())
	pf.WaitForCacheSync(ctx.Done())
	sf.WaitForCacheSync(ctx.Done())
	defer c.secrets.Stop()
	defer c.configMaps.Stop()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		c.sync(ctx, w)
		select {
		case <-ctx.Done():
			return nil
		case <-c.trigger:
		case <-tick.C:
		}
	}
}

// lead competes for the Lease until ctx ends.
func (c *Controller) lead(ctx context.Context) {
	id, _ := os.Hostname()
	lock := &resourcelock.LeaseLock{LeaseMeta: metav1.ObjectMeta{Name: Lease, Namespace: c.cfg.Namespace},
		Client: c.client.CoordinationV1(), LockConfig: resourcelock.ResourceLockConfig{Identity: id}}
	for ctx.Err() == nil {
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock: lock, LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
			ReleaseOnCancel: true, Name: Lease,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					c.log.Info("leading: writes Gateways' Services and status")
					c.leader.Store(true)
					c.kick()
					<-ctx.Done()
				},
				OnStoppedLeading: func() { c.leader.Store(false) },
			},
		})
	}
}

// updated syncs on a change, but not on a Gateway API object's status
// write (its generation unchanged): weft's own writes would each cost a
// whole sync.
func (c *Controller) updated(old, cur any) {
	o, ok1 := old.(metav1.Object)
	n, ok2 := cur.(metav1.Object)
	if ok1 && ok2 && n.GetGeneration() != 0 && o.GetGeneration() == n.GetGeneration() &&
		reflect.DeepEqual(o.GetLabels(), n.GetLabels()) && isGatewayAPI(cur) {
		return
	}
	c.changedObject(cur)
}

// changedObject syncs; a change to anything but a route also changes
// the world routes are compiled from.
func (c *Controller) changedObject(o any) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	switch o.(type) {
	case *gwv1.HTTPRoute, *gwv1.GRPCRoute, *gwv1.TLSRoute:
		c.kick()
	default:
		c.worldChanged()
	}
}

func isGatewayAPI(o any) bool {
	switch o.(type) {
	case *gwv1.GatewayClass, *gwv1.Gateway, *gwv1.HTTPRoute, *gwv1.GRPCRoute, *gwv1.TLSRoute, *gwv1.ReferenceGrant, *gwv1.BackendTLSPolicy, *gwv1.ListenerSet:
		return true
	}
	return false
}

// served: the API server has this resource of the Gateway API's v1.
func (c *Controller) served(resource string) bool {
	list, err := c.client.Discovery().ServerResourcesForGroupVersion(gwv1.GroupVersion.String())
	if err != nil {
		return false
	}
	for _, r := range list.APIResources {
		if r.Name == resource {
			return true
		}
	}
	return false
}

type watched struct {
	classes, gateways, routes, grants, namespaces cache.SharedIndexInformer
	grpc, tls, policies, sets                     cache.SharedIndexInformer // nil: not served
	services                                      corelisters.ServiceLister
	pods                                          corelisters.PodLister // the proxy's
	slices                                        discoverylisters.EndpointSliceLister
}

func (c *Controller) sync(ctx context.Context, w *watched) {
	world := c.world.Load() // before the stores are read: a change after it bumps it again
	if k := c.kickedAt.Swap(0); k != 0 {
		c.syncSeconds.WithLabelValues("wait").Observe(time.Since(time.Unix(0, k)).Seconds())
	}
	t := c.stageTimer()
	in := Input{NamespaceLabels: map[string]map[string]string{}}
	for _, o := range w.classes.GetStore().List() {
		in.Classes = append(in.Classes, o.(*gwv1.GatewayClass))
	}
	for _, o := range w.gateways.GetStore().List() {
		in.Gateways = append(in.Gateways, o.(*gwv1.Gateway))
	}
	for _, o := range w.routes.GetStore().List() {
		in.HTTPRoutes = append(in.HTTPRoutes, o.(*gwv1.HTTPRoute))
	}
	if w.grpc != nil {
		for _, o := range w.grpc.GetStore().List() {
			in.GRPCRoutes = append(in.GRPCRoutes, o.(*gwv1.GRPCRoute))
		}
	}
	if w.tls != nil {
		for _, o := range w.tls.GetStore().List() {
			in.TLSRoutes = append(in.TLSRoutes, o.(*gwv1.TLSRoute))
		}
	}
	if w.sets != nil {
		for _, o := range w.sets.GetStore().List() {
			in.ListenerSets = append(in.ListenerSets, o.(*gwv1.ListenerSet))
		}
	}
	if w.policies != nil {
		for _, o := range w.policies.GetStore().List() {
			in.BackendTLSPolicies = append(in.BackendTLSPolicies, o.(*gwv1.BackendTLSPolicy))
		}
	}
	for _, o := range w.grants.GetStore().List() {
		in.Grants = append(in.Grants, o.(*gwv1.ReferenceGrant))
	}
	for _, o := range w.namespaces.GetStore().List() {
		ns := o.(*corev1.Namespace)
		in.NamespaceLabels[ns.Name] = ns.Labels
	}
	in.ServiceExists = func(ns, name string) bool { _, err := w.services.Services(ns).Get(name); return err == nil }
	in.ServicePortName = func(ns, name string, port int32) string {
		svc, err := w.services.Services(ns).Get(name)
		if err != nil {
			return ""
		}
		for _, p := range svc.Spec.Ports {
			if p.Port == port {
				return p.Name
			}
		}
		return ""
	}
	in.Secret = c.secret
	in.CACerts = c.caCerts
	c.secrets.Want(secretKeys(in))
	c.configMaps.Want(configMapKeys(in))
	ours := ourGateways(in)
	t("read")
	in.ProxyPorts, in.Addresses = c.ensureServices(ctx, ours, listenerSetPorts(in), w)
	t("services")
	in.World, in.Memo = world, &c.memo
	res := BuildPorts(in)
	t("build")
	c.compiles.WithLabelValues("hit").Add(float64(c.memo.Hits))
	c.compiles.WithLabelValues("miss").Add(float64(c.memo.Misses))
	c.ports.Store(&res.Ports)
	c.changed()
	t("swap")
	if c.leader.Load() {
		res.FinishStatuses()
		t("statuses")
		c.statuses.Store(&statusJob{in: in, res: res})
		select {
		case c.written <- struct{}{}:
		default:
		}
	}
}

// stageTimer returns a func that observes the time since its last call
// (or since stageTimer) as the named stage.
func (c *Controller) stageTimer() func(stage string) {
	last := time.Now()
	return func(stage string) {
		now := time.Now()
		c.syncSeconds.WithLabelValues(stage).Observe(now.Sub(last).Seconds())
		last = now
	}
}

// secret loads a TLS Secret the Gateways name.
func (c *Controller) secret(ns, name string) (*tls.Certificate, error) {
	sec, _ := c.secrets.Get(ns, name).(*corev1.Secret)
	if sec == nil {
		return nil, errors.New("not found")
	}
	if sec.Type != corev1.SecretTypeTLS && len(sec.Data[corev1.TLSCertKey]) == 0 {
		return nil, fmt.Errorf("not a TLS Secret")
	}
	cert, err := tls.X509KeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, err
	}
	return &cert, nil
}

// caCerts loads the certificates of a ConfigMap's ca.crt.
func (c *Controller) caCerts(ns, name string) ([]*x509.Certificate, error) {
	cm, _ := c.configMaps.Get(ns, name).(*corev1.ConfigMap)
	if cm == nil {
		return nil, errors.New("not found")
	}
	return parseCerts([]byte(cm.Data["ca.crt"]))
}

// configMapKeys are the ConfigMaps weft's Gateways and the
// BackendTLSPolicies name for CA certificates.
func configMapKeys(in Input) []string {
	var out []string
	for _, p := range in.BackendTLSPolicies {
		for _, ref := range p.Spec.Validation.CACertificateRefs {
			out = append(out, p.Namespace+"/"+string(ref.Name))
		}
	}
	for _, g := range ourGateways(in) {
		if t := g.Spec.TLS; t != nil && t.Frontend != nil {
			vs := []*gwv1.FrontendTLSValidation{t.Frontend.Default.Validation}
			for _, pp := range t.Frontend.PerPort {
				vs = append(vs, pp.TLS.Validation)
			}
			for _, v := range vs {
				if v == nil {
					continue
				}
				for _, ref := range v.CACertificateRefs {
					ns := g.Namespace
					if ref.Namespace != nil {
						ns = string(*ref.Namespace)
					}
					out = append(out, ns+"/"+string(ref.Name))
				}
			}
		}
	}
	return out
}

// secretKeys are the Secrets weft's Gateways name: their listeners'
// certificates and their client certificate for TLS backends.
func secretKeys(in Input) []string {
	var out []string
	for _, g := range ourGateways(in) {
		if t := g.Spec.TLS; t != nil && t.Backend != nil && t.Backend.ClientCertificateRef != nil {
			ref, ns := t.Backend.ClientCertificateRef, g.Namespace
			if ref.Namespace != nil {
				ns = string(*ref.Namespace)
			}
			out = append(out, ns+"/"+string(ref.Name))
		}
		for _, l := range g.Spec.Listeners {
			if l.TLS == nil {
				continue
			}
			for _, ref := range l.TLS.CertificateRefs {
				ns := g.Namespace
				if ref.Namespace != nil {
					ns = string(*ref.Namespace)
				}
				out = append(out, ns+"/"+string(ref.Name))
			}
		}
	}
	return out
}

func ourGateways(in Input) []*gwv1.Gateway {
	classes := map[string]bool{}
	for _, c := range in.Classes {
		classes[c.Name] = c.Spec.ControllerName == ControllerName
	}
	var out []*gwv1.Gateway
	for _, g := range in.Gateways {
		if classes[string(g.Spec.GatewayClassName)] {
			out = append(out, g)
		}
	}
	return out
}

// writeStatuses writes the latest statuses a sync left, skipping those a
// newer sync replaced while it wrote, until ctx ends.
func (c *Controller) writeStatuses(ctx context.Context) {
	start := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.written:
		}
		if job := c.statuses.Swap(nil); job != nil {
			start = c.writeAll(ctx, job, start)
		}
	}
}

// writeAll runs the status writers from start on, in turn, and returns
// where the next pass starts: the writer a newer sync interrupted, so
// that under constant change every kind still gets written, not only
// the first.
func (c *Controller) writeAll(ctx context.Context, job *statusJob, start int) int {
	writers := []func(context.Context, Input, *Result) bool{
		c.writeStatus, c.writeGRPCStatus, c.writeTLSStatus, c.writePolicyStatus, c.writeListenerSetStatus}
	for i := range writers {
		w := (start + i) % len(writers)
		if !writers[w](ctx, job.in, job.res) {
			return w
		}
	}
	return start
}

// kickLater syncs again in a second (after a failed write); one wait at
// a time, however many writes failed.
func (c *Controller) kickLater() {
	if c.retrying.CompareAndSwap(false, true) {
		time.AfterFunc(time.Second, func() { c.retrying.Store(false); c.kick() })
	}
}
