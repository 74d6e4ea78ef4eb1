package gateway

import (
	"context"
	"log/slog"
	"reflect"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// mergeConditions returns want with the transition times of old's
// conditions that did not change status.
func mergeConditions(old, want []metav1.Condition) []metav1.Condition {
	out := append([]metav1.Condition(nil), old...)
	keep := map[string]bool{}
	for _, c := range want {
		keep[c.Type] = true
		meta.SetStatusCondition(&out, c)
	}
	kept := out[:0]
	for _, c := range out {
		if keep[c.Type] {
			kept = append(kept, c)
		}
	}
	return kept
}

// GatewayStatus is the status to write: want, with old's transition
// times where nothing changed.
func GatewayStatus(old gwv1.GatewayStatus, want *gwv1.GatewayStatus) gwv1.GatewayStatus {
	out := *want.DeepCopy()
	out.Conditions = mergeConditions(old.Conditions, want.Conditions)
	for i := range out.Listeners {
		var prev []metav1.Condition
		for _, o := range old.Listeners {
			if o.Name == out.Listeners[i].Name {
				prev = o.Conditions
			}
		}
		out.Listeners[i].Conditions = mergeConditions(prev, out.Listeners[i].Conditions)
	}
	return out
}

// RouteStatus is an HTTPRoute's status with weft's parents replaced by
// want, other controllers' kept as they are.
func RouteStatus(old gwv1.RouteStatus, want []gwv1.RouteParentStatus) gwv1.RouteStatus {
	var out gwv1.RouteStatus
	for _, p := range old.Parents {
		if p.ControllerName != ControllerName {
			out.Parents = append(out.Parents, p)
		}
	}
	for _, w := range want {
		w = *w.DeepCopy()
		var prev []metav1.Condition
		for _, o := range old.Parents {
			if o.ControllerName == ControllerName && reflect.DeepEqual(o.ParentRef, w.ParentRef) {
				prev = o.Conditions
			}
		}
		w.Conditions = mergeConditions(prev, w.Conditions)
		out.Parents = append(out.Parents, w)
	}
	if out.Parents == nil {
		out.Parents = []gwv1.RouteParentStatus{}
	}
	return out
}

// writeStatus writes every status that changed; a failed write is tried
// again at the next sync.
func (c *Controller) writeStatus(ctx context.Context, in Input, res *Result) bool {
	api := c.gw.GatewayV1()
	for _, gc := range in.Classes {
		want, ok := res.Classes[gc.Name]
		if !ok {
			continue
		}
		conds := mergeConditions(gc.Status.Conditions, want)
		if !reflect.DeepEqual(conds, gc.Status.Conditions) {
			upd := gc.DeepCopy()
			upd.Status.Conditions = conds
			_, err := api.GatewayClasses().UpdateStatus(ctx, upd, metav1.UpdateOptions{})
			c.failed(err, "GatewayClass", gc.Name)
		}
	}
	for _, g := range in.Gateways {
		want := res.Gateways[types.NamespacedName{Namespace: g.Namespace, Name: g.Name}]
		if want == nil {
			continue
		}
		st := GatewayStatus(g.Status, want)
		if !reflect.DeepEqual(st, g.Status) {
			upd := g.DeepCopy()
			upd.Status = st
			_, err := api.Gateways(g.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
			c.failed(err, "Gateway", g.Namespace+"/"+g.Name)
		}
	}
	for _, r := range in.HTTPRoutes {
		if c.statuses.Load() != nil {
			return false // a newer sync's statuses are waiting: write those
		}
		want := res.Routes[RouteKey{Kind: "HTTPRoute", NamespacedName: types.NamespacedName{Namespace: r.Namespace, Name: r.Name}}]
		if (want == nil && !hasOurParent(r.Status.RouteStatus)) || routeStatusCurrent(r.Status.RouteStatus, want) {
			continue
		}
		st := RouteStatus(r.Status.RouteStatus, want)
		if !reflect.DeepEqual(st, r.Status.RouteStatus) {
			upd := r.DeepCopy()
			upd.Status.RouteStatus = st
			_, err := api.HTTPRoutes(r.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
			c.failed(err, "HTTPRoute", r.Namespace+"/"+r.Name)
		}
	}
	return true
}

// writeGRPCStatus writes the GRPCRoutes' statuses that changed.
func (c *Controller) writeGRPCStatus(ctx context.Context, in Input, res *Result) bool {
	for _, r := range in.GRPCRoutes {
		if c.statuses.Load() != nil {
			return false
		}
		want := res.Routes[RouteKey{Kind: "GRPCRoute", NamespacedName: types.NamespacedName{Namespace: r.Namespace, Name: r.Name}}]
		if (want == nil && !hasOurParent(r.Status.RouteStatus)) || routeStatusCurrent(r.Status.RouteStatus, want) {
			continue
		}
		st := RouteStatus(r.Status.RouteStatus, want)
		if !reflect.DeepEqual(st, r.Status.RouteStatus) {
			upd := r.DeepCopy()
			upd.Status.RouteStatus = st
			_, err := c.gw.GatewayV1().GRPCRoutes(r.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
			c.failed(err, "GRPCRoute", r.Namespace+"/"+r.Name)
		}
	}
	return true
}

// writeTLSStatus writes the TLSRoutes' statuses that changed.
func (c *Controller) writeTLSStatus(ctx context.Context, in Input, res *Result) bool {
	for _, r := range in.TLSRoutes {
		if c.statuses.Load() != nil {
			return false
		}
		want := res.Routes[RouteKey{Kind: "TLSRoute", NamespacedName: types.NamespacedName{Namespace: r.Namespace, Name: r.Name}}]
		if (want == nil && !hasOurParent(r.Status.RouteStatus)) || routeStatusCurrent(r.Status.RouteStatus, want) {
			continue
		}
		st := RouteStatus(r.Status.RouteStatus, want)
		if !reflect.DeepEqual(st, r.Status.RouteStatus) {
			upd := r.DeepCopy()
			upd.Status.RouteStatus = st
			_, err := c.gw.GatewayV1().TLSRoutes(r.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
			c.failed(err, "TLSRoute", r.Namespace+"/"+r.Name)
		}
	}
	return true
}

// routeStatusCurrent says, without allocating, what
// reflect.DeepEqual(RouteStatus(old, want), old) says: the status writer
// compares thousands of unchanged routes after every sync, and copying
// each status to compare it made garbage that slowed the syncs.
func routeStatusCurrent(old gwv1.RouteStatus, want []gwv1.RouteParentStatus) bool {
	i := 0
	for i < len(old.Parents) && old.Parents[i].ControllerName != ControllerName {
		i++ // other controllers' parents come first
	}
	ours := old.Parents[i:]
	if len(ours) != len(want) || (len(old.Parents) == 0 && old.Parents == nil) {
		return false // RouteStatus never leaves Parents nil
	}
	for j, w := range want {
		o := ours[j]
		if o.ControllerName != ControllerName || w.ControllerName != ControllerName || !reflect.DeepEqual(o.ParentRef, w.ParentRef) ||
			!conditionsCurrent(o.Conditions, w.Conditions) {
			return false
		}
	}
	return true
}

// conditionsCurrent: mergeConditions(old, want) would return old.
func conditionsCurrent(old, want []metav1.Condition) bool {
	if len(old) != len(want) {
		return false
	}
	for _, w := range want {
		o := meta.FindStatusCondition(old, w.Type)
		if o == nil || o.Status != w.Status || o.Reason != w.Reason || o.Message != w.Message || o.ObservedGeneration != w.ObservedGeneration {
			return false
		}
	}
	return true
}

func hasOurParent(st gwv1.RouteStatus) bool {
	for _, p := range st.Parents {
		if p.ControllerName == ControllerName {
			return true
		}
	}
	return false
}

func (c *Controller) failed(err error, kind, name string) {
	if err != nil {
		level := slog.LevelWarn
		switch {
		case apierrors.IsNotFound(err):
			c.log.Debug("status write: the object is gone", "kind", kind, "name", name)
			return // deleted since the sync: its deletion is a change of its own
		case apierrors.IsConflict(err):
			level = slog.LevelDebug // our cache was behind: the next sync has the new version
		}
		c.log.Log(context.Background(), level, "status write failed; tried again at the next sync", "kind", kind, "name", name, "err", err)
		c.kickLater()
	}
}

// PolicyStatus is a BackendTLSPolicy's status with weft's ancestors
// replaced by want, other controllers' kept as they are.
func PolicyStatus(old gwv1.PolicyStatus, want []gwv1.PolicyAncestorStatus) gwv1.PolicyStatus {
	out := gwv1.PolicyStatus{Ancestors: []gwv1.PolicyAncestorStatus{}}
	for _, a := range old.Ancestors {
		if a.ControllerName != ControllerName {
			out.Ancestors = append(out.Ancestors, a)
		}
	}
	for _, w := range want {
		w = *w.DeepCopy()
		var prev []metav1.Condition
		for _, o := range old.Ancestors {
			if o.ControllerName == ControllerName && reflect.DeepEqual(o.AncestorRef, w.AncestorRef) {
				prev = o.Conditions
			}
		}
		w.Conditions = mergeConditions(prev, w.Conditions)
		out.Ancestors = append(out.Ancestors, w)
	}
	return out
}

func (c *Controller) writePolicyStatus(ctx context.Context, in Input, res *Result) bool {
	for _, p := range in.BackendTLSPolicies {
		if c.statuses.Load() != nil {
			return false
		}
		st := PolicyStatus(p.Status, res.Policies[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}])
		if len(st.Ancestors) == 0 && len(p.Status.Ancestors) == 0 {
			continue
		}
		if !reflect.DeepEqual(st, p.Status) {
			upd := p.DeepCopy()
			upd.Status = st
			_, err := c.gw.GatewayV1().BackendTLSPolicies(p.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
			c.failed(err, "BackendTLSPolicy", p.Namespace+"/"+p.Name)
		}
	}
	return true
}

func (c *Controller) writeListenerSetStatus(ctx context.Context, in Input, res *Result) bool {
	for _, ls := range in.ListenerSets {
		if c.statuses.Load() != nil {
			return false
		}
		want, ok := res.ListenerSets[types.NamespacedName{Namespace: ls.Namespace, Name: ls.Name}]
		if !ok {
			continue // names no Gateway of weft's
		}
		st := *want.DeepCopy()
		st.Conditions = mergeConditions(ls.Status.Conditions, st.Conditions)
		for i := range st.Listeners {
			var prev []metav1.Condition
			for _, o := range ls.Status.Listeners {
				if o.Name == st.Listeners[i].Name {
					prev = o.Conditions
				}
			}
			st.Listeners[i].Conditions = mergeConditions(prev, st.Listeners[i].Conditions)
		}
		if !reflect.DeepEqual(st, ls.Status) {
			upd := ls.DeepCopy()
			upd.Status = st
			_, err := c.gw.GatewayV1().ListenerSets(ls.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
			c.failed(err, "ListenerSet", ls.Namespace+"/"+ls.Name)
		}
	}
	return true
}
