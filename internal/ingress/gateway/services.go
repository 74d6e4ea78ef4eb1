package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Labels on a Gateway's Service name the Gateway.
const (
	LabelGatewayNamespace = "gateway.weft.dev/namespace"
	LabelGatewayName      = "gateway.weft.dev/name"
	// FirstProxyPort is the lowest port the proxy serves a listener on.
	FirstProxyPort = 20000
	lastProxyPort  = 29999
)

// ServiceName is the Service of a Gateway: its name cut to fit, and a
// hash of namespace/name so that no two Gateways share one.
func ServiceName(ns, name string) string {
	sum := sha256.Sum256([]byte(ns + "/" + name))
	base := "weft-gw-" + name
	if len(base) > 44 {
		base = base[:44]
	}
	return base + "-" + hex.EncodeToString(sum[:5])
}

// PlanService is the Service a Gateway needs: type LoadBalancer, one port
// per listener port (its own and extra, its ListenerSets'), each sent to
// the proxy port already given to it or the lowest free one; the
// requested IP address, if any.
func PlanService(g *gwv1.Gateway, extra []int32, cfg Config, old *corev1.Service, used map[int]bool) *corev1.Service {
	have := map[int32]int{}
	if old != nil {
		for _, p := range old.Spec.Ports {
			have[p.Port] = p.TargetPort.IntValue()
		}
	}
	var listenerPorts []int32
	seen := map[int32]bool{}
	for _, l := range g.Spec.Listeners {
		extra = append(extra, l.Port)
	}
	for _, port := range extra {
		if !seen[port] {
			seen[port] = true
			listenerPorts = append(listenerPorts, port)
		}
	}
	sort.Slice(listenerPorts, func(i, j int) bool { return listenerPorts[i] < listenerPorts[j] })
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: ServiceName(g.Namespace, g.Name), Namespace: cfg.Namespace,
		Labels: map[string]string{LabelGatewayNamespace: g.Namespace, LabelGatewayName: g.Name}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: cfg.Selector}}
	next := FirstProxyPort
	for _, lp := range listenerPorts {
		pp, ok := have[lp]
		if !ok || pp == 0 {
			for used[next] && next <= lastProxyPort {
				next++
			}
			if next > lastProxyPort {
				continue // every port taken: the listener stays unprogrammed
			}
			pp = next
			used[pp] = true
		}
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("l%d", lp), Protocol: corev1.ProtocolTCP,
			Port: lp, TargetPort: intstr.FromInt32(int32(pp))})
	}
	for _, a := range g.Spec.Addresses {
		if a.Type == nil || *a.Type == gwv1.IPAddressType {
			svc.Spec.LoadBalancerIP = a.Value // lb-ipam honours it when free and in its pool
			break
		}
	}
	return svc
}

// ensureServices makes each Gateway's Service what it should be, deletes
// those of Gateways gone (when leading), and returns each Gateway's proxy ports and
// addresses.
func (c *Controller) ensureServices(ctx context.Context, gws []*gwv1.Gateway, setPorts map[types.NamespacedName][]int32, services corelisters.ServiceLister) (map[types.NamespacedName]map[int32]int, map[types.NamespacedName][]string) {
	existing, _ := services.Services(c.cfg.Namespace).List(labels.SelectorFromSet(nil))
	byName := map[string]*corev1.Service{}
	used := map[int]bool{}
	for _, s := range existing {
		if s.Labels[LabelGatewayName] != "" {
			byName[s.Name] = s
		}
	}
	c.overlayRecent(byName)
	olds := UniquePorts(byName)
	for _, s := range olds {
		for _, p := range s.Spec.Ports {
			used[p.TargetPort.IntValue()] = true
		}
	}
	ports := map[types.NamespacedName]map[int32]int{}
	addrs := map[types.NamespacedName][]string{}
	want := map[string]bool{}
	for _, g := range sortedGateways(gws) {
		key := types.NamespacedName{Namespace: g.Namespace, Name: g.Name}
		old := olds[ServiceName(g.Namespace, g.Name)]
		svc := PlanService(g, setPorts[key], c.cfg, old, used)
		want[svc.Name] = true
		cur := old
		if c.leader.Load() {
			cur = c.applyService(ctx, old, svc)
		}
		if cur == nil {
			continue
		}
		ports[key] = map[int32]int{}
		for _, p := range cur.Spec.Ports {
			ports[key][p.Port] = p.TargetPort.IntValue()
		}
		for _, in := range cur.Status.LoadBalancer.Ingress {
			if in.IP != "" {
				addrs[key] = append(addrs[key], in.IP)
			}
		}
	}
	for name := range byName {
		if !want[name] && c.leader.Load() {
			delete(c.recent, name)
			if err := c.client.CoreV1().Services(c.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				c.log.Warn("deleting a Gateway's Service", "service", name, "err", err)
			}
		}
	}
	return ports, addrs
}

// applyService creates or updates a Service; it returns the Service as it
// now is (nil when the write failed).
func (c *Controller) applyService(ctx context.Context, old, svc *corev1.Service) *corev1.Service {
	api := c.client.CoreV1().Services(c.cfg.Namespace)
	if old == nil {
		got, err := api.Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			c.log.Warn("creating a Gateway's Service", "service", svc.Name, "err", err)
			return nil
		}
		c.recent[got.Name] = got
		return got
	}
	if reflect.DeepEqual(old.Spec.Ports, withDefaults(svc.Spec.Ports, old.Spec.Ports)) && old.Spec.LoadBalancerIP == svc.Spec.LoadBalancerIP &&
		reflect.DeepEqual(old.Spec.Selector, svc.Spec.Selector) {
		return old
	}
	upd := old.DeepCopy()
	upd.Spec.Ports, upd.Spec.LoadBalancerIP, upd.Spec.Selector, upd.Labels = withDefaults(svc.Spec.Ports, old.Spec.Ports), svc.Spec.LoadBalancerIP, svc.Spec.Selector, svc.Labels
	got, err := api.Update(ctx, upd, metav1.UpdateOptions{})
	if err != nil {
		c.log.Warn("updating a Gateway's Service", "service", svc.Name, "err", err)
		return old
	}
	c.recent[got.Name] = got
	return got
}

// withDefaults keeps the node ports the API server gave the old ports.
func withDefaults(ports, old []corev1.ServicePort) []corev1.ServicePort {
	out := append([]corev1.ServicePort(nil), ports...)
	for i := range out {
		for _, o := range old {
			if o.Port == out[i].Port {
				out[i].NodePort = o.NodePort
			}
		}
	}
	return out
}

// overlayRecent puts the Services this controller wrote over the
// informer's copies until the informer has caught up: a sync right after
// a write must not see a proxy port as free and give it to another
// Gateway.
func (c *Controller) overlayRecent(byName map[string]*corev1.Service) {
	for name, mine := range c.recent {
		seen := byName[name]
		if seen != nil && resourceVersion(seen) >= resourceVersion(mine) {
			delete(c.recent, name)
			continue
		}
		byName[name] = mine
	}
}

func resourceVersion(s *corev1.Service) uint64 {
	v, _ := strconv.ParseUint(s.ResourceVersion, 10, 64)
	return v
}

// UniquePorts returns the Services with every proxy port held by one
// Service only: a port two Services name stays with the first by name;
// the other's port is cleared (0), so PlanService gives it a new one.
func UniquePorts(byName map[string]*corev1.Service) map[string]*corev1.Service {
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	owner := map[int]string{}
	out := make(map[string]*corev1.Service, len(byName))
	for _, n := range names {
		s := byName[n]
		for i, p := range s.Spec.Ports {
			tp := p.TargetPort.IntValue()
			if o, taken := owner[tp]; taken && o != n {
				s = s.DeepCopy()
				s.Spec.Ports[i].TargetPort = intstr.FromInt32(0)
				continue
			}
			owner[tp] = n
		}
		out[n] = s
	}
	return out
}

// staticAddressProblem says why the addresses a Gateway asks for cannot
// be its own ("": they can, or it asks for none): its Service gets one
// address per IP family, from the LoadBalancer pool, so a second address
// of a family, or an address the Service was not given, is unusable.
func staticAddressProblem(g *gwv1.Gateway, assigned []string) string {
	perFamily := map[bool]int{}
	var want []string
	for _, a := range g.Spec.Addresses {
		if a.Type != nil && *a.Type != gwv1.IPAddressType {
			continue
		}
		ip, err := netip.ParseAddr(a.Value)
		if err != nil {
			return fmt.Sprintf("address %q is not an IP address", a.Value)
		}
		if perFamily[ip.Is4()]++; perFamily[ip.Is4()] > 1 {
			return fmt.Sprintf("address %s: weft gives a Gateway one address per IP family", a.Value)
		}
		want = append(want, ip.String())
	}
	if len(want) == 0 || len(assigned) == 0 {
		return ""
	}
	for _, w := range want {
		if !slices.Contains(assigned, w) {
			return fmt.Sprintf("address %s was not given to the Gateway's Service (outside the LoadBalancer pool, or taken)", w)
		}
	}
	return ""
}
