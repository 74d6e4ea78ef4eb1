package lbipam

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

func lb(name, requested, assigned string) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerIP: requested}}
	if assigned != "" {
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: assigned}}
	}
	return s
}

func TestPlan(t *testing.T) {
	_, pool, _ := net.ParseCIDR("198.19.100.0/30") // .1 and .2 usable
	other := lb("other-class", "", "")
	other.Spec.LoadBalancerClass = ptr.To("example.com/other")
	cluster := lb("cluster", "", "")
	cluster.Spec.Type = corev1.ServiceTypeClusterIP
	plan, warn := Plan(pool, []*corev1.Service{
		lb("has", "", "198.19.100.1"), lb("new", "", ""), lb("wants-taken", "198.19.100.1", ""), lb("late", "", ""), other, cluster,
	})
	if got := plan[types.NamespacedName{Namespace: "ns", Name: "new"}]; got.String() != "198.19.100.2" {
		t.Fatalf("new got %v", got)
	}
	if len(plan) != 1 {
		t.Fatalf("plan %v", plan)
	}
	if len(warn) != 2 {
		t.Fatalf("warnings %v (want taken request and exhaustion)", warn)
	}
}

func TestPlanCleanup(t *testing.T) {
	_, pool, _ := net.ParseCIDR("198.19.100.0/24")
	fresh := lb("fresh", "", "198.19.100.1")
	kept := lb("kept", "", "198.19.100.2")
	kept.Finalizers = []string{Finalizer, "example.com/keep"}
	toCluster := lb("to-cluster", "", "198.19.100.3")
	toCluster.Spec.Type = corev1.ServiceTypeClusterIP
	toCluster.Finalizers = []string{Finalizer}
	deleting := lb("deleting", "", "198.19.100.4")
	deleting.Finalizers = []string{Finalizer}
	deleting.DeletionTimestamp = &metav1.Time{}
	foreign := lb("foreign", "", "203.0.113.7") // another controller's status
	foreign.Spec.Type = corev1.ServiceTypeClusterIP
	other := lb("other-class", "", "")
	other.Spec.LoadBalancerClass = ptr.To("example.com/other")
	stale := lb("stale", "", "198.19.100.5") // no finalizer, no longer LB
	stale.Spec.Type = corev1.ServiceTypeNodePort

	c := PlanCleanup(pool, []*corev1.Service{fresh, kept, toCluster, deleting, foreign, other, stale})
	names := func(keys []types.NamespacedName) string {
		var s []string
		for _, k := range keys {
			s = append(s, k.Name)
		}
		return strings.Join(s, ",")
	}
	if got := names(c.AddFinalizer); got != "fresh" {
		t.Errorf("add finalizer: %s", got)
	}
	if got := names(c.RemoveFinalizer); got != "to-cluster,deleting" {
		t.Errorf("remove finalizer: %s", got)
	}
	if got := names(c.ClearStatus); got != "to-cluster,deleting,stale" {
		t.Errorf("clear status: %s", got)
	}
	// A Service being deleted gets no new address.
	deleting.Status.LoadBalancer.Ingress = nil
	if plan, _ := Plan(pool, []*corev1.Service{deleting}); len(plan) != 0 {
		t.Errorf("address for a deleted Service: %v", plan)
	}
}

// TestPlanMovesToTheRequestedAddress: a Service that now asks for another
// address than it holds has its old one released and gets the new one
// when it is free and in the pool (a Gateway's addresses changed).
func TestPlanMovesToTheRequestedAddress(t *testing.T) {
	_, pool, _ := net.ParseCIDR("198.19.100.0/24")
	moving := lb("moving", "198.19.100.9", "198.19.100.1")
	moving.Finalizers = []string{Finalizer}
	outside := lb("outside", "192.0.2.1", "198.19.100.2")
	outside.Finalizers = []string{Finalizer}
	settled := lb("settled", "198.19.100.3", "198.19.100.3")
	settled.Finalizers = []string{Finalizer}
	svcs := []*corev1.Service{moving, outside, settled}
	c := PlanCleanup(pool, svcs)
	if len(c.ClearStatus) != 2 || c.ClearStatus[0].Name != "moving" || c.ClearStatus[1].Name != "outside" {
		t.Errorf("clear status: %v", c.ClearStatus)
	}
	plan, warn := Plan(pool, svcs)
	if got := plan[types.NamespacedName{Namespace: "ns", Name: "moving"}]; got.String() != "198.19.100.9" {
		t.Errorf("moving got %v", got)
	}
	if len(plan) != 1 || len(warn) != 1 {
		t.Errorf("plan %v, warnings %v: want only the move, and a warning for the address outside the pool", plan, warn)
	}
}

// TestAddressKeptWhileTheInformerIsBehind: a sync right after an
// assignment, whose informer has not shown it yet, must neither give
// that address to another Service nor move the first Service to another
// address. Here an older Service turns LoadBalancer at that moment.
func TestAddressKeptWhileTheInformerIsBehind(t *testing.T) {
	_, pool, _ := net.ParseCIDR("198.19.100.0/29")
	first := lb("first", "", "")
	first.UID, first.ResourceVersion, first.CreationTimestamp = "u1", "10", metav1.Unix(2000, 0)
	older := lb("older", "", "")
	older.UID, older.ResourceVersion, older.CreationTimestamp = "u2", "11", metav1.Unix(1000, 0)
	older.Spec.Type = corev1.ServiceTypeClusterIP
	client := fake.NewClientset(first, older)
	client.PrependReactor("patch", "services", conditionalPatch(t, client))
	factory := informers.NewSharedInformerFactory(client, 0)
	a := New(pool, client, factory, slog.New(slog.DiscardHandler))
	store := factory.Core().V1().Services().Informer().GetStore()
	_ = store.Add(first.DeepCopy())
	_ = store.Add(older.DeepCopy())
	ctx := context.Background()
	if err := a.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := address(t, client, "first"); got != "198.19.100.1" {
		t.Fatalf("first got %q", got)
	}
	// "older" becomes a LoadBalancer; the informer shows that but not yet
	// first's address (nor its finalizer).
	older.Spec.Type, older.ResourceVersion = corev1.ServiceTypeLoadBalancer, "30"
	if err := client.Tracker().Update(corev1.SchemeGroupVersion.WithResource("services"), older.DeepCopy(), "ns"); err != nil {
		t.Fatal(err)
	}
	_ = store.Update(older.DeepCopy())
	if err := a.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if f, o := address(t, client, "first"), address(t, client, "older"); f != "198.19.100.1" || o == "" || o == f {
		t.Fatalf("first %q, older %q: want first to keep 198.19.100.1 and older another address", f, o)
	}
}

// conditionalPatch makes the fake API server treat a patch's
// metadata.resourceVersion as a real one does (a precondition) and give
// each write a new version; a patch without one fails the test.
func conditionalPatch(t *testing.T, client *fake.Clientset) k8stesting.ReactionFunc {
	return func(action k8stesting.Action) (bool, runtime.Object, error) {
		pa := action.(k8stesting.PatchActionImpl)
		var body map[string]any
		if err := json.Unmarshal(pa.Patch, &body); err != nil {
			return true, nil, err
		}
		meta, _ := body["metadata"].(map[string]any)
		want, _ := meta["resourceVersion"].(string)
		if want == "" {
			t.Errorf("unconditional patch of %s: %s", pa.Name, pa.Patch)
			return true, nil, fmt.Errorf("unconditional patch")
		}
		cur, err := client.Tracker().Get(pa.Resource, pa.Namespace, pa.Name)
		if err != nil {
			return true, nil, err
		}
		have := cur.(*corev1.Service).ResourceVersion
		if want != have {
			return true, nil, apierrors.NewConflict(pa.Resource.GroupResource(), pa.Name, fmt.Errorf("version %s, not %s", have, want))
		}
		n, _ := strconv.Atoi(have)
		meta["resourceVersion"] = strconv.Itoa(n + 1)
		pa.Patch, _ = json.Marshal(body)
		return k8stesting.ObjectReaction(client.Tracker())(pa)
	}
}

func address(t *testing.T, client *fake.Clientset, name string) string {
	t.Helper()
	s, err := client.CoreV1().Services("ns").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Status.LoadBalancer.Ingress) == 0 {
		return ""
	}
	return s.Status.LoadBalancer.Ingress[0].IP
}
