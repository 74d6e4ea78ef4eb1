// Package lbipam gives LoadBalancer Services addresses from a configured
// pool (status.loadBalancer.ingress), so they work where no cloud load
// balancer exists: in the lab, and on bare metal until the addresses are
// announced (BGP). The service proxy then serves them like externalIPs.
package lbipam

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Class is the loadBalancerClass this allocator serves (besides none).
const Class = "weft.dev/lb-ipam"

// Allocator hands out pool addresses.
type Allocator struct {
	pool     *net.IPNet
	client   kubernetes.Interface
	services listersv1.ServiceLister
	log      *slog.Logger
	kick     chan struct{}
	// recent: each Service as this allocator's last write to it returned
	// it, until the informer has caught up (see View). Run's goroutine only.
	recent map[types.NamespacedName]*corev1.Service
}

// New wires an allocator on a shared informer factory.
func New(pool *net.IPNet, client kubernetes.Interface, factory informers.SharedInformerFactory, log *slog.Logger) *Allocator {
	a := &Allocator{pool: pool, client: client, log: log, kick: make(chan struct{}, 1), recent: map[types.NamespacedName]*corev1.Service{}}
	inf := factory.Core().V1().Services()
	a.services = inf.Lister()
	_, _ = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.trigger() },
		UpdateFunc: func(any, any) { a.trigger() },
		DeleteFunc: func(any) { a.trigger() },
	})
	return a
}

func (a *Allocator) trigger() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Run assigns addresses until ctx ends; the informer must have synced.
func (a *Allocator) Run(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	a.trigger()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-t.C:
		}
		if err := a.sync(ctx); err != nil {
			a.log.Warn("lb-ipam sync failed", "err", err)
			time.AfterFunc(2*time.Second, a.trigger)
		}
	}
}

func wants(svc *corev1.Service) bool {
	return ours(svc) && svc.DeletionTimestamp == nil
}

// ours: a LoadBalancer Service of no class or of lb-ipam's.
func ours(svc *corev1.Service) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	return svc.Spec.LoadBalancerClass == nil || *svc.Spec.LoadBalancerClass == Class
}

// Finalizer is the cleanup finalizer Kubernetes' service controller puts
// on LoadBalancer Services: the address is released (status cleared)
// before the Service goes.
const Finalizer = "service.kubernetes.io/load-balancer-cleanup"

// Cleanup is what a Service needs besides an address (pure).
type Cleanup struct {
	AddFinalizer    []types.NamespacedName
	RemoveFinalizer []types.NamespacedName // status cleared first
	ClearStatus     []types.NamespacedName
}

// PlanCleanup: a wanted Service gets the finalizer; a Service being
// deleted, or no longer a LoadBalancer of ours, has the pool address in its
// status cleared and the finalizer removed.
func PlanCleanup(pool *net.IPNet, svcs []*corev1.Service) Cleanup {
	var c Cleanup
	for _, s := range svcs {
		key := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
		has := slices.Contains(s.Finalizers, Finalizer)
		switch {
		case wants(s) && !has:
			c.AddFinalizer = append(c.AddFinalizer, key)
		case wants(s):
		case has && (s.DeletionTimestamp != nil || s.Spec.Type != corev1.ServiceTypeLoadBalancer):
			if poolStatus(pool, s) {
				c.ClearStatus = append(c.ClearStatus, key)
			}
			c.RemoveFinalizer = append(c.RemoveFinalizer, key)
		case s.Spec.Type != corev1.ServiceTypeLoadBalancer && poolStatus(pool, s):
			c.ClearStatus = append(c.ClearStatus, key)
		}
		if wants(s) && moved(s) && poolStatus(pool, s) {
			c.ClearStatus = append(c.ClearStatus, key) // released; Plan gives the requested one if it can
		}
	}
	return c
}

// moved: the Service asks (spec.loadBalancerIP) for another address than
// the one it holds.
func moved(s *corev1.Service) bool {
	req := net.ParseIP(s.Spec.LoadBalancerIP)
	if req == nil || len(s.Status.LoadBalancer.Ingress) == 0 {
		return false
	}
	for _, in := range s.Status.LoadBalancer.Ingress {
		if ip := net.ParseIP(in.IP); ip != nil && ip.Equal(req) {
			return false
		}
	}
	return true
}

// poolStatus: the Service's status holds an address of the pool.
func poolStatus(pool *net.IPNet, s *corev1.Service) bool {
	for _, in := range s.Status.LoadBalancer.Ingress {
		if ip := net.ParseIP(in.IP); ip != nil && pool.Contains(ip) {
			return true
		}
	}
	return false
}

// Plan decides, from all services, which ones get which address (pure).
// Addresses already assigned stay, unless the Service now asks for
// another; spec.loadBalancerIP is honoured when it is in the pool and
// free.
func Plan(pool *net.IPNet, svcs []*corev1.Service) (map[types.NamespacedName]net.IP, []string) {
	used := map[string]bool{}
	var warnings []string
	for _, s := range svcs {
		if !wants(s) || moved(s) {
			continue
		}
		for _, ing := range s.Status.LoadBalancer.Ingress {
			used[ing.IP] = true
		}
	}
	out := map[types.NamespacedName]net.IP{}
	for _, s := range svcs {
		if !wants(s) || (len(s.Status.LoadBalancer.Ingress) > 0 && !moved(s)) {
			continue
		}
		key := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
		if req := net.ParseIP(s.Spec.LoadBalancerIP); req != nil {
			if !pool.Contains(req) || used[req.String()] {
				warnings = append(warnings, fmt.Sprintf("%s: loadBalancerIP %s is outside the pool %s or taken", key, req, pool))
				continue
			}
			used[req.String()] = true
			out[key] = req
			continue
		}
		ip := next(pool, used)
		if ip == nil {
			warnings = append(warnings, fmt.Sprintf("%s: pool %s exhausted", key, pool))
			continue
		}
		used[ip.String()] = true
		out[key] = ip
	}
	return out, warnings
}

// next returns the first free host address of pool (network and
// broadcast skipped).
func next(pool *net.IPNet, used map[string]bool) net.IP {
	base := new(big.Int).SetBytes(pool.IP.Mask(pool.Mask).To4())
	ones, bits := pool.Mask.Size()
	size := int64(1) << uint(bits-ones)
	for i := int64(1); i < size-1; i++ {
		b := new(big.Int).Add(base, big.NewInt(i)).Bytes()
		ip := make(net.IP, 4)
		copy(ip[4-len(b):], b)
		if !used[ip.String()] {
			return ip
		}
	}
	return nil
}

// View is the Services as the informer lists them, each replaced by the
// copy this allocator's own write returned while the informer is behind
// that write, oldest Service first. Without it a sync right after an
// assignment saw the Service without its address, gave the address to a
// second Service and the first another one: a Gateway's address changed
// after it was reported. Copies the informer has caught up with, or
// whose Service is gone or was made anew, are forgotten.
func View(listed []*corev1.Service, recent map[types.NamespacedName]*corev1.Service) []*corev1.Service {
	out := make([]*corev1.Service, 0, len(listed))
	seen := map[types.NamespacedName]bool{}
	for _, s := range listed {
		key := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
		seen[key] = true
		if mine := recent[key]; mine != nil {
			if mine.UID == s.UID && resourceVersion(mine) > resourceVersion(s) {
				s = mine
			} else {
				delete(recent, key)
			}
		}
		out = append(out, s)
	}
	for key := range recent {
		if !seen[key] {
			delete(recent, key)
		}
	}
	slices.SortFunc(out, func(x, y *corev1.Service) int {
		if c := x.CreationTimestamp.Compare(y.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(x.Namespace+"/"+x.Name, y.Namespace+"/"+y.Name)
	})
	return out
}

func resourceVersion(s *corev1.Service) uint64 {
	v, _ := strconv.ParseUint(s.ResourceVersion, 10, 64)
	return v
}

func (a *Allocator) sync(ctx context.Context) error {
	listed, err := a.services.List(labels.Everything())
	if err != nil {
		return err
	}
	svcs := View(listed, a.recent)
	byKey := make(map[types.NamespacedName]*corev1.Service, len(svcs))
	for _, s := range svcs {
		byKey[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = s
	}
	plan, warnings := Plan(a.pool, svcs)
	for _, w := range warnings {
		a.log.Warn("lb-ipam", "problem", w)
	}
	if err := a.cleanup(ctx, PlanCleanup(a.pool, svcs), byKey); err != nil {
		return err
	}
	for _, s := range svcs { // oldest first, as planned
		key := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
		if ip, ok := plan[key]; ok {
			if err := a.assign(ctx, a.current(key, byKey), ip); err != nil {
				return err
			}
		}
	}
	return nil
}

// write patches a Service, on the condition that it is still the version
// the sync planned from (a conflict: something changed it; the informer's
// event brings another sync). The result goes into recent.
func (a *Allocator) write(ctx context.Context, s *corev1.Service, body map[string]any, subresources ...string) (bool, error) {
	meta, _ := body["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		body["metadata"] = meta
	}
	meta["resourceVersion"] = s.ResourceVersion
	patch, _ := json.Marshal(body)
	got, err := a.client.CoreV1().Services(s.Namespace).Patch(ctx, s.Name, types.MergePatchType, patch, metav1.PatchOptions{}, subresources...)
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	a.recent[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = got
	return true, nil
}

func (a *Allocator) assign(ctx context.Context, s *corev1.Service, ip net.IP) error {
	ok, err := a.write(ctx, s, map[string]any{"status": map[string]any{"loadBalancer": map[string]any{
		"ingress": []map[string]any{{"ip": ip.String(), "ipMode": "VIP"}}}}}, "status")
	if err != nil {
		return fmt.Errorf("assign %s to %s/%s: %w", ip, s.Namespace, s.Name, err)
	}
	if ok {
		a.log.Info("assigned load-balancer address", "service", s.Namespace+"/"+s.Name, "ip", ip)
	}
	return nil
}

func (a *Allocator) cleanup(ctx context.Context, c Cleanup, byKey map[types.NamespacedName]*corev1.Service) error {
	for _, key := range c.ClearStatus {
		ok, err := a.write(ctx, a.current(key, byKey), map[string]any{"status": map[string]any{"loadBalancer": nil}}, "status")
		if err != nil {
			return fmt.Errorf("release the address of %s: %w", key, err)
		}
		if ok {
			a.log.Info("released load-balancer address", "service", key.String())
		}
	}
	for _, key := range c.AddFinalizer {
		if err := a.setFinalizer(ctx, a.current(key, byKey), true); err != nil {
			return err
		}
	}
	for _, key := range c.RemoveFinalizer {
		if err := a.setFinalizer(ctx, a.current(key, byKey), false); err != nil {
			return err
		}
	}
	return nil
}

// current: the Service as this sync's own writes left it.
func (a *Allocator) current(key types.NamespacedName, byKey map[types.NamespacedName]*corev1.Service) *corev1.Service {
	if mine := a.recent[key]; mine != nil && resourceVersion(mine) > resourceVersion(byKey[key]) {
		return mine
	}
	return byKey[key]
}

// setFinalizer adds or removes the cleanup finalizer, keeping the others.
func (a *Allocator) setFinalizer(ctx context.Context, s *corev1.Service, on bool) error {
	fins := slices.DeleteFunc(slices.Clone(s.Finalizers), func(f string) bool { return f == Finalizer })
	if on {
		fins = append(fins, Finalizer)
	}
	if _, err := a.write(ctx, s, map[string]any{"metadata": map[string]any{"finalizers": fins}}); err != nil {
		return fmt.Errorf("finalizer of %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}
