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
}

// New wires an allocator on a shared informer factory.
func New(pool *net.IPNet, client kubernetes.Interface, factory informers.SharedInformerFactory, log *slog.Logger) *Allocator {
	a := &Allocator{pool: pool, client: client, log: log, kick: make(chan struct{}, 1)}
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

func (a *Allocator) sync(ctx context.Context) error {
	svcs, err := a.services.List(labels.Everything())
	if err != nil {
		return err
	}
	plan, warnings := Plan(a.pool, svcs)
	for _, w := range warnings {
		a.log.Warn("lb-ipam", "problem", w)
	}
	if err := a.cleanup(ctx, PlanCleanup(a.pool, svcs)); err != nil {
		return err
	}
	for key, ip := range plan {
		patch, _ := json.Marshal(map[string]any{"status": map[string]any{"loadBalancer": map[string]any{
			"ingress": []map[string]any{{"ip": ip.String(), "ipMode": "VIP"}}}}})
		if _, err := a.client.CoreV1().Services(key.Namespace).Patch(ctx, key.Name, types.MergePatchType, patch,
			metav1.PatchOptions{}, "status"); err != nil {
			return fmt.Errorf("assign %s to %s: %w", ip, key, err)
		}
		a.log.Info("assigned load-balancer address", "service", key.String(), "ip", ip)
	}
	return nil
}

func (a *Allocator) cleanup(ctx context.Context, c Cleanup) error {
	for _, key := range c.ClearStatus {
		patch := []byte(`{"status":{"loadBalancer":null}}`)
		if _, err := a.client.CoreV1().Services(key.Namespace).Patch(ctx, key.Name, types.MergePatchType, patch,
			metav1.PatchOptions{}, "status"); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("release the address of %s: %w", key, err)
		}
		a.log.Info("released load-balancer address", "service", key.String())
	}
	for _, key := range c.AddFinalizer {
		if err := a.setFinalizer(ctx, key, true); err != nil {
			return err
		}
	}
	for _, key := range c.RemoveFinalizer {
		if err := a.setFinalizer(ctx, key, false); err != nil {
			return err
		}
	}
	return nil
}

// setFinalizer adds or removes the cleanup finalizer, keeping the others.
func (a *Allocator) setFinalizer(ctx context.Context, key types.NamespacedName, on bool) error {
	svc, err := a.services.Services(key.Namespace).Get(key.Name)
	if err != nil {
		return nil // gone
	}
	fins := slices.DeleteFunc(slices.Clone(svc.Finalizers), func(f string) bool { return f == Finalizer })
	if on {
		fins = append(fins, Finalizer)
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": fins, "resourceVersion": svc.ResourceVersion}})
	_, err = a.client.CoreV1().Services(key.Namespace).Patch(ctx, key.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("finalizer of %s: %w", key, err)
	}
	return nil
}
