package gateway

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// The API server refuses conditions without a transition time; one that
// keeps its status keeps its time.
func TestStatusConditionsHaveTransitionTimes(t *testing.T) {
	then := metav1.NewTime(time.Unix(1000, 0))
	old := gwv1.GatewayStatus{Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: then}},
		Listeners: []gwv1.ListenerStatus{{Name: "a", Conditions: []metav1.Condition{{Type: "Programmed", Status: metav1.ConditionFalse, Reason: "Pending", LastTransitionTime: then}}}}}
	want := &gwv1.GatewayStatus{Conditions: []metav1.Condition{cond("Accepted", true, "Accepted", "", 2), cond("Programmed", true, "Programmed", "", 2)},
		Listeners: []gwv1.ListenerStatus{{Name: "a", Conditions: []metav1.Condition{cond("Programmed", true, "Programmed", "", 2)}},
			{Name: "new", Conditions: []metav1.Condition{cond("Accepted", true, "Accepted", "", 2)}}}}
	st := GatewayStatus(old, want)
	all := append(append([]metav1.Condition{}, st.Conditions...), st.Listeners[0].Conditions...)
	all = append(all, st.Listeners[1].Conditions...)
	for _, c := range all {
		if c.LastTransitionTime.IsZero() {
			t.Errorf("%s: no transition time", c.Type)
		}
	}
	if !st.Conditions[0].LastTransitionTime.Equal(&then) {
		t.Error("Accepted kept its status but its transition time changed")
	}
	if st.Listeners[0].Conditions[0].LastTransitionTime.Equal(&then) {
		t.Error("listener Programmed changed status but kept its old transition time")
	}
	rs := RouteStatus(gwv1.RouteStatus{Parents: []gwv1.RouteParentStatus{{ControllerName: "example.com/other"}}},
		[]gwv1.RouteParentStatus{{ControllerName: ControllerName, Conditions: []metav1.Condition{cond("Accepted", true, "Accepted", "", 1)}}})
	if len(rs.Parents) != 2 || rs.Parents[1].Conditions[0].LastTransitionTime.IsZero() {
		t.Errorf("route parents: %+v", rs.Parents)
	}
}

// routeStatusCurrent must agree with comparing RouteStatus's result.
func TestRouteStatusCurrentAgreesWithRouteStatus(t *testing.T) {
	then := metav1.NewTime(time.Unix(1000, 0))
	at := func(c metav1.Condition) metav1.Condition { c.LastTransitionTime = then; return c }
	gw := gwv1.ParentReference{Name: "gw"}
	other := gwv1.RouteParentStatus{ParentRef: gw, ControllerName: "example.com/other"}
	ours := func(ref gwv1.ParentReference, conds ...metav1.Condition) gwv1.RouteParentStatus {
		return gwv1.RouteParentStatus{ParentRef: ref, ControllerName: ControllerName, Conditions: conds}
	}
	accepted, resolved := cond("Accepted", true, "Accepted", "", 2), cond("ResolvedRefs", true, "ResolvedRefs", "", 2)
	want := []gwv1.RouteParentStatus{ours(gw, accepted, resolved)}
	cases := map[string]gwv1.RouteStatus{
		"written":                {Parents: []gwv1.RouteParentStatus{ours(gw, at(accepted), at(resolved))}},
		"written, conds swapped": {Parents: []gwv1.RouteParentStatus{ours(gw, at(resolved), at(accepted))}},
		"other first":            {Parents: []gwv1.RouteParentStatus{other, ours(gw, at(accepted), at(resolved))}},
		"other after":            {Parents: []gwv1.RouteParentStatus{ours(gw, at(accepted), at(resolved)), other}},
		"none":                   {},
		"empty":                  {Parents: []gwv1.RouteParentStatus{}},
		"old generation":         {Parents: []gwv1.RouteParentStatus{ours(gw, at(cond("Accepted", true, "Accepted", "", 1)), at(resolved))}},
		"other reason":           {Parents: []gwv1.RouteParentStatus{ours(gw, at(accepted), at(cond("ResolvedRefs", false, "BackendNotFound", "x", 2)))}},
		"extra condition":        {Parents: []gwv1.RouteParentStatus{ours(gw, at(accepted), at(resolved), at(cond("PartiallyInvalid", true, "x", "", 2)))}},
		"other parent ref":       {Parents: []gwv1.RouteParentStatus{ours(gwv1.ParentReference{Name: "gw2"}, at(accepted), at(resolved))}},
		"two of ours":            {Parents: []gwv1.RouteParentStatus{ours(gw, at(accepted), at(resolved)), ours(gw, at(accepted), at(resolved))}},
	}
	for name, old := range cases {
		for _, w := range [][]gwv1.RouteParentStatus{want, nil} {
			got := routeStatusCurrent(old, w)
			if exact := reflect.DeepEqual(RouteStatus(old, w), old); got != exact {
				t.Errorf("%s (want %d parents): %v, RouteStatus says %v", name, len(w), got, exact)
			}
		}
	}
}
