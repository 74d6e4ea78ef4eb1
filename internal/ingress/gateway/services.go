package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Labels on a Gateway's Service and EndpointSlices name the Gateway.
const (
	LabelGatewayNamespace = "gateway.weft.dev/namespace"
	LabelGatewayName      = "gateway.weft.dev/name"
	// LabelAPIGatewayName is the Gateway API's label for what an
	// implementation makes for a Gateway.
	LabelAPIGatewayName = "gateway.networking.k8s.io/gateway-name"
	// AnnotationPropagated lists the spec.infrastructure annotations weft
	// put on a Service: it removes those the Gateway no longer asks for
	// and leaves everyone else's alone.
	AnnotationPropagated = "gateway.weft.dev/infrastructure-annotations"
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

// PlanService is the Service a Gateway needs, in the Gateway's namespace
// and owned by it: type LoadBalancer without a selector (weft writes its
// EndpointSlices, which name the proxy's pods), one port per listener
// port (its own and extra, its ListenerSets'), each sent to the proxy
// port already given to it or the lowest free one; the requested IP
// address, if any; spec.infrastructure's labels and annotations.
// old is the Gateway's Service as it is, or the one weft made before in
// its own namespace (whose proxy ports it keeps where still free).
func PlanService(g *gwv1.Gateway, extra []int32, cfg Config, old *corev1.Service, used map[int]bool) *corev1.Service {
	have := map[int32]int{}
	if old != nil {
		for _, p := range old.Spec.Ports {
			if pp := p.TargetPort.IntValue(); old.Namespace == g.Namespace || !used[pp] {
				have[p.Port] = pp
			}
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
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: ServiceName(g.Namespace, g.Name), Namespace: g.Namespace,
		Labels: gatewayLabels(g), Annotations: infrastructureAnnotations(g), OwnerReferences: []metav1.OwnerReference{gatewayOwner(g)}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}
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

// gatewayLabels: spec.infrastructure's labels, then weft's (which win).
func gatewayLabels(g *gwv1.Gateway) map[string]string {
	out := map[string]string{}
	if inf := g.Spec.Infrastructure; inf != nil {
		for k, v := range inf.Labels {
			out[string(k)] = string(v)
		}
	}
	out[LabelGatewayNamespace], out[LabelGatewayName], out[LabelAPIGatewayName] = g.Namespace, g.Name, g.Name
	return out
}

// infrastructureAnnotations: spec.infrastructure's annotations and the
// list of their keys.
func infrastructureAnnotations(g *gwv1.Gateway) map[string]string {
	out := map[string]string{}
	var keys []string
	if inf := g.Spec.Infrastructure; inf != nil {
		for k, v := range inf.Annotations {
			out[string(k)] = string(v)
			keys = append(keys, string(k))
		}
	}
	sort.Strings(keys)
	out[AnnotationPropagated] = strings.Join(keys, ",")
	return out
}

// mergeAnnotations: a Service's annotations with the ones weft propagated
// before replaced by want (others', such as a user's, stay).
func mergeAnnotations(cur, want map[string]string) map[string]string {
	before := strings.Split(cur[AnnotationPropagated], ",")
	out := map[string]string{}
	for k, v := range cur {
		if !slices.Contains(before, k) {
			out[k] = v
		}
	}
	maps.Copy(out, want)
	return out
}

func gatewayOwner(g *gwv1.Gateway) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: gwv1.GroupVersion.String(), Kind: "Gateway", Name: g.Name, UID: g.UID, Controller: ptr(true)}
}

func serviceKey(ns, name string) string { return ns + "/" + name }

// ensureServices makes each Gateway's Service and EndpointSlices what they
// should be, deletes those of Gateways gone and the Services weft made
// in its own namespace before (when leading), and returns each Gateway's
// proxy ports and addresses.
func (c *Controller) ensureServices(ctx context.Context, gws []*gwv1.Gateway, setPorts map[types.NamespacedName][]int32, w *watched) (map[types.NamespacedName]map[int32]int, map[types.NamespacedName][]string) {
	existing, _ := w.services.List(gatewayServiceSelector)
	byName := map[string]*corev1.Service{}
	legacy := map[string]*corev1.Service{}
	used := map[int]bool{}
	for _, s := range existing {
		if s.Namespace == c.cfg.Namespace && len(s.Spec.Selector) > 0 {
			legacy[serviceKey(s.Labels[LabelGatewayNamespace], s.Name)] = s
			continue
		}
		byName[serviceKey(s.Namespace, s.Name)] = s
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
	want, moved := map[string]bool{}, map[string]bool{}
	for _, g := range sortedGateways(gws) {
		key := types.NamespacedName{Namespace: g.Namespace, Name: g.Name}
		k := serviceKey(g.Namespace, ServiceName(g.Namespace, g.Name))
		old, plan := olds[k], olds[k]
		if plan == nil {
			plan = legacy[k]
		}
		svc := PlanService(g, setPorts[key], c.cfg, plan, used)
		want[k] = true
		cur := old
		if c.leader.Load() {
			cur = c.applyService(ctx, old, svc)
		} else if cur == nil {
			cur = legacy[k] // until the leader has moved it
		}
		if cur == nil {
			continue
		}
		if c.leader.Load() {
			c.ensureSlices(ctx, cur, w)
			moved[k] = true
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
	if c.leader.Load() {
		for k, s := range byName {
			if !want[k] {
				delete(c.recent, k)
				c.deleteService(ctx, s)
			}
		}
		for k, s := range legacy {
			if moved[k] || !want[k] {
				c.deleteService(ctx, s)
			}
		}
	}
	return ports, addrs
}

// gatewayServiceSelector picks the Services weft made for Gateways.
var gatewayServiceSelector = func() labels.Selector {
	req, _ := labels.NewRequirement(LabelGatewayName, selection.Exists, nil)
	return labels.NewSelector().Add(*req)
}()

func (c *Controller) deleteService(ctx context.Context, s *corev1.Service) {
	if err := c.client.CoreV1().Services(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		c.log.Warn("deleting a Gateway's Service", "service", serviceKey(s.Namespace, s.Name), "err", err)
	}
}

// applyService creates or updates a Service; it returns the Service as it
// now is (nil when the write failed).
func (c *Controller) applyService(ctx context.Context, old, svc *corev1.Service) *corev1.Service {
	api := c.client.CoreV1().Services(svc.Namespace)
	key := serviceKey(svc.Namespace, svc.Name)
	if old == nil {
		got, err := api.Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			c.log.Warn("creating a Gateway's Service", "service", key, "err", err)
			return nil
		}
		c.recent[key] = got
		return got
	}
	annotations := mergeAnnotations(old.Annotations, svc.Annotations)
	if reflect.DeepEqual(old.Spec.Ports, withDefaults(svc.Spec.Ports, old.Spec.Ports)) && old.Spec.LoadBalancerIP == svc.Spec.LoadBalancerIP &&
		len(old.Spec.Selector) == 0 && maps.Equal(old.Labels, svc.Labels) && maps.Equal(old.Annotations, annotations) {
		return old
	}
	upd := old.DeepCopy()
	upd.Spec.Ports, upd.Spec.LoadBalancerIP, upd.Spec.Selector = withDefaults(svc.Spec.Ports, old.Spec.Ports), svc.Spec.LoadBalancerIP, nil
	upd.Labels, upd.Annotations, upd.OwnerReferences = svc.Labels, annotations, svc.OwnerReferences
	got, err := api.Update(ctx, upd, metav1.UpdateOptions{})
	if err != nil {
		c.log.Warn("updating a Gateway's Service", "service", key, "err", err)
		return old
	}
	c.recent[key] = got
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
