package gateway

import (
	"context"
	"maps"
	"reflect"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// ManagedBy marks the EndpointSlices weft writes for Gateways' Services,
// which have no selector: the cluster's EndpointSlice controller leaves
// them alone.
const ManagedBy = "gateway.weft.dev"

// PlanSlices are a Gateway Service's EndpointSlices: one per IP family of
// the Service, naming each proxy pod (ready, serving and terminating as
// the pod is) at the proxy ports the Service's ports send to.
func PlanSlices(svc *corev1.Service, pods []*corev1.Pod) []*discoveryv1.EndpointSlice {
	ports := make([]discoveryv1.EndpointPort, 0, len(svc.Spec.Ports))
	for _, p := range svc.Spec.Ports {
		if pp := int32(p.TargetPort.IntValue()); pp != 0 {
			ports = append(ports, discoveryv1.EndpointPort{Name: ptr(p.Name), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(pp)})
		}
	}
	pods = append([]*corev1.Pod(nil), pods...)
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	sliceLabels := maps.Clone(svc.Labels)
	sliceLabels[discoveryv1.LabelServiceName], sliceLabels[discoveryv1.LabelManagedBy] = svc.Name, ManagedBy
	var out []*discoveryv1.EndpointSlice
	for _, family := range svc.Spec.IPFamilies {
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: svc.Name + "-" + strings.ToLower(string(family)), Namespace: svc.Namespace, Labels: sliceLabels,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID, Controller: ptr(true)}}},
			AddressType: discoveryv1.AddressType(family), Ports: ports}
		for _, p := range pods {
			if e, ok := podEndpoint(p, family); ok {
				sl.Endpoints = append(sl.Endpoints, e)
			}
		}
		out = append(out, sl)
	}
	return out
}

// podEndpoint is a proxy pod as an endpoint of the family (false: the pod
// has no address of it, or has ended).
func podEndpoint(p *corev1.Pod, family corev1.IPFamily) (discoveryv1.Endpoint, bool) {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return discoveryv1.Endpoint{}, false
	}
	var ip string
	for _, a := range p.Status.PodIPs {
		if (family == corev1.IPv6Protocol) == strings.Contains(a.IP, ":") {
			ip = a.IP
			break
		}
	}
	if ip == "" {
		return discoveryv1.Endpoint{}, false
	}
	ready, terminating := false, p.DeletionTimestamp != nil
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	e := discoveryv1.Endpoint{Addresses: []string{ip},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr(ready && !terminating), Serving: ptr(ready), Terminating: ptr(terminating)},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID}}
	if p.Spec.NodeName != "" {
		e.NodeName = ptr(p.Spec.NodeName)
	}
	return e, true
}

// keepSlice is the slice informer's transform: only managedFields go.
// The plan is compared with the whole slice (kubeclient.Slim's dropping
// of targetRef made every sync rewrite every Gateway's slice, and every
// agent's service proxy sync on it).
func keepSlice(obj any) (any, error) {
	if sl, ok := obj.(*discoveryv1.EndpointSlice); ok {
		sl.ManagedFields = nil
	}
	return obj, nil
}

// sameSlice: the slice as it is already says what the plan says.
func sameSlice(cur, want *discoveryv1.EndpointSlice) bool {
	return maps.Equal(cur.Labels, want.Labels) && reflect.DeepEqual(cur.Endpoints, want.Endpoints) &&
		reflect.DeepEqual(cur.Ports, want.Ports) && reflect.DeepEqual(cur.OwnerReferences, want.OwnerReferences)
}

// ensureSlices writes a Gateway Service's EndpointSlices where they differ
// from the plan. A slice of a deleted Service goes with it (owner
// reference).
func (c *Controller) ensureSlices(ctx context.Context, svc *corev1.Service, w *watched) {
	pods, _ := w.pods.List(labels.Everything())
	for _, want := range PlanSlices(svc, pods) {
		api := c.client.DiscoveryV1().EndpointSlices(want.Namespace)
		cur, err := w.slices.EndpointSlices(want.Namespace).Get(want.Name)
		if err != nil {
			if _, err := api.Create(ctx, want, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				c.log.Warn("creating a Gateway's EndpointSlice", "endpointslice", serviceKey(want.Namespace, want.Name), "err", err)
			}
			continue
		}
		if sameSlice(cur, want) {
			continue
		}
		upd := cur.DeepCopy()
		upd.Labels, upd.Endpoints, upd.Ports, upd.OwnerReferences = want.Labels, want.Endpoints, want.Ports, want.OwnerReferences
		if _, err := api.Update(ctx, upd, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) {
			// A conflict: the cache is behind this replica's own write; the next sync writes again.
			c.log.Warn("updating a Gateway's EndpointSlice", "endpointslice", serviceKey(want.Namespace, want.Name), "err", err)
		}
	}
}
