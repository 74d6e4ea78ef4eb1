package controller

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"weft.dev/weft/internal/ingress/proxy"
	"weft.dev/weft/internal/ingress/route"
	"weft.dev/weft/internal/kubeclient"
)

// Config says where the controller publishes from.
type Config struct {
	// PublishService (namespace/name) is the LoadBalancer Service in front
	// of the proxy: its addresses go into each Ingress's status.
	PublishService string
	// GatewayPorts, when set, are the Gateway listeners' ports to serve
	// beside the Ingresses (the Gateway API controller's).
	GatewayPorts func() map[int]*proxy.Port
}

// Controller keeps the proxy's snapshot and certificates current.
type Controller struct {
	cfg      Config
	client   kubernetes.Interface
	proxy    *proxy.Proxy
	certs    *Certs
	log      *slog.Logger
	recorder record.EventRecorder

	factory  informers.SharedInformerFactory
	ings     cache.SharedIndexInformer
	classes  cache.SharedIndexInformer
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	secrets  *NamedWatch
	configs  *NamedWatch
	trigger  chan struct{}

	mu       sync.Mutex
	reported map[route.Problem]bool

	snapMu      sync.Mutex
	ingressSnap *proxy.Snapshot // the last sync's, without Gateway ports
}

// New wires a controller to its proxy and certificate store.
func New(cfg Config, client kubernetes.Interface, p *proxy.Proxy, certs *Certs, log *slog.Logger) *Controller {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(kubeclient.Slim))
	c := &Controller{cfg: cfg, client: client, proxy: p, certs: certs, log: log, factory: factory,
		ings: factory.Networking().V1().Ingresses().Informer(), classes: factory.Networking().V1().IngressClasses().Informer(),
		services: factory.Core().V1().Services().Lister(), slices: factory.Discovery().V1().EndpointSlices().Lister(),
		trigger: make(chan struct{}, 1), reported: map[route.Problem]bool{}}
	c.secrets = NewNamedWatch(client.CoreV1().RESTClient(), "secrets", func() runtime.Object { return &corev1.Secret{} }, c.kick)
	c.configs = NewNamedWatch(client.CoreV1().RESTClient(), "configmaps", func() runtime.Object { return &corev1.ConfigMap{} }, c.kick)
	for _, inf := range []cache.SharedIndexInformer{c.ings, c.classes, factory.Core().V1().Services().Informer(),
		factory.Discovery().V1().EndpointSlices().Informer()} {
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { c.kick() }, UpdateFunc: func(any, any) { c.kick() }, DeleteFunc: func(any) { c.kick() }})
	}
	return c
}

func (c *Controller) kick() {
	select {
	case c.trigger <- struct{}{}:
	default:
	}
}

// Run syncs on every change until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	c.recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "weft-ingress"})
	c.factory.Start(ctx.Done())
	for typ, ok := range c.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache of %v did not sync", typ)
		}
	}
	defer c.secrets.Stop()
	defer c.configs.Stop()
	tick := time.NewTicker(30 * time.Second) // status drift, certificates expiring in place
	defer tick.Stop()
	for {
		start := time.Now()
		c.sync(ctx)
		c.log.Debug("ingress synced", "took", time.Since(start))
		select {
		case <-ctx.Done():
			return nil
		case <-c.trigger:
		case <-tick.C:
		}
	}
}

func (c *Controller) sync(ctx context.Context) {
	var ings []*networkingv1.Ingress
	for _, o := range c.ings.GetStore().List() {
		ings = append(ings, o.(*networkingv1.Ingress))
	}
	var classes []*networkingv1.IngressClass
	for _, o := range c.classes.GetStore().List() {
		classes = append(classes, o.(*networkingv1.IngressClass))
	}
	ours := Ours(ings, classes)
	c.configs.Want(HeaderConfigMaps(ours))
	l := listers{c.services, c.slices, c.configs}
	snap, tlsRefs, probs := Build(ours, l)
	c.snapMu.Lock()
	c.ingressSnap = snap
	c.swapWithPorts(l)
	c.snapMu.Unlock()
	probs = append(probs, c.updateCerts(tlsRefs)...)
	c.report(ours, probs)
	c.writeStatus(ctx, ours)
}

// SwapPorts serves the Gateway ports as they are now beside the Ingresses
// of the last sync, without rebuilding those: a Gateway API change costs
// only its own routes.
func (c *Controller) SwapPorts() {
	c.snapMu.Lock()
	defer c.snapMu.Unlock()
	if c.ingressSnap == nil {
		c.kick() // no sync yet: the first one takes the ports
		return
	}
	c.swapWithPorts(listers{c.services, c.slices, c.configs})
}

// swapWithPorts swaps in the Ingresses' snapshot with the Gateway ports
// and their backends' endpoints added (snapMu held).
func (c *Controller) swapWithPorts(l listers) {
	in := c.ingressSnap
	if c.cfg.GatewayPorts == nil {
		c.proxy.Swap(in)
		return
	}
	s := &proxy.Snapshot{Table: in.Table, Endpoints: make(map[route.Backend][]string, len(in.Endpoints)), H2C: make(map[route.Backend]bool, len(in.H2C))}
	for b, eps := range in.Endpoints {
		s.Endpoints[b] = eps
	}
	for b, h := range in.H2C {
		s.H2C[b] = h
	}
	s.Ports = c.cfg.GatewayPorts()
	ResolvePorts(s, l)
	c.proxy.Swap(s)
}

// updateCerts watches exactly the Secrets the Ingresses name and loads
// each host's certificate.
func (c *Controller) updateCerts(refs []route.TLS) []route.Problem {
	var keys []string
	for _, ref := range refs {
		keys = append(keys, ref.Namespace+"/"+ref.Name)
	}
	c.secrets.Want(keys)
	byHost := map[string]*tls.Certificate{}
	var probs []route.Problem
	for _, ref := range refs {
		sec, _ := c.secrets.Get(ref.Namespace, ref.Name).(*corev1.Secret)
		if sec == nil {
			probs = append(probs, route.Problem{Ingress: ref.Source, Message: fmt.Sprintf("TLS secret %s not found (yet); the default certificate serves %v", ref.Name, ref.Hosts)})
			continue
		}
		cert, err := tls.X509KeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
		if err != nil {
			probs = append(probs, route.Problem{Ingress: ref.Source, Message: fmt.Sprintf("TLS secret %s: %v", ref.Name, err)})
			continue
		}
		for _, h := range ref.Hosts {
			if _, taken := byHost[h]; !taken {
				byHost[h] = &cert
			}
		}
	}
	c.certs.Set(byHost)
	return probs
}

// report sends each problem once as a Warning Event on its Ingress.
func (c *Controller) report(ours []*networkingv1.Ingress, probs []route.Problem) {
	byKey := map[string]*networkingv1.Ingress{}
	for _, ing := range ours {
		byKey[ing.Namespace+"/"+ing.Name] = ing
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := map[route.Problem]bool{}
	for _, p := range probs {
		now[p] = true
		if c.reported[p] {
			continue
		}
		c.log.Warn("ingress problem", "ingress", p.Ingress, "problem", p.Message)
		if ing := byKey[p.Ingress]; ing != nil && c.recorder != nil {
			c.recorder.Event(ing, corev1.EventTypeWarning, "Ignored", p.Message)
		}
	}
	c.reported = now
}

// writeStatus puts the published Service's addresses into each Ingress's
// status.loadBalancer.
func (c *Controller) writeStatus(ctx context.Context, ours []*networkingv1.Ingress) {
	if c.cfg.PublishService == "" {
		return
	}
	ns, name, _ := cache.SplitMetaNamespaceKey(c.cfg.PublishService)
	svc, err := c.services.Services(ns).Get(name)
	if err != nil {
		return
	}
	var want []networkingv1.IngressLoadBalancerIngress
	for _, in := range svc.Status.LoadBalancer.Ingress {
		want = append(want, networkingv1.IngressLoadBalancerIngress{IP: in.IP, Hostname: in.Hostname})
	}
	for _, ing := range ours {
		if reflect.DeepEqual(ing.Status.LoadBalancer.Ingress, want) {
			continue
		}
		cp := ing.DeepCopy()
		cp.Status.LoadBalancer.Ingress = want
		if _, err := c.client.NetworkingV1().Ingresses(ing.Namespace).UpdateStatus(ctx, cp, metav1UpdateOptions); err != nil {
			c.log.Warn("ingress status", "ingress", ing.Namespace+"/"+ing.Name, "err", err)
		}
	}
}

type listers struct {
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	configs  *NamedWatch
}

func (l listers) ConfigMap(ns, name string) *corev1.ConfigMap {
	cm, _ := l.configs.Get(ns, name).(*corev1.ConfigMap)
	return cm
}

func (l listers) Service(ns, name string) (*corev1.Service, error) {
	return l.services.Services(ns).Get(name)
}

func (l listers) EndpointSlices(ns, svc string) ([]*discoveryv1.EndpointSlice, error) {
	return l.slices.EndpointSlices(ns).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc}))
}
