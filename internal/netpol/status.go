package netpol

import (
	"context"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
	npaclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"
	npainformers "sigs.k8s.io/network-policy-api/pkg/client/informers/externalversions"
)

// ConditionAccepted is the condition weft sets on every
// ClusterNetworkPolicy: True when every rule is enforced, False (reason
// RulesIgnored) naming the rules left out.
const ConditionAccepted = "Accepted"

// StatusLease is the Lease whose holder, one agent of the cluster, writes
// the policies' status.
const StatusLease = "weft-policy-status"

// acceptedCondition is the condition a policy should carry.
func acceptedCondition(p *cnp.ClusterNetworkPolicy) metav1.Condition {
	c := metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionTrue, Reason: "Accepted",
		Message: "every rule is enforced", ObservedGeneration: p.Generation}
	if problems := ValidateClusterPolicy(p); len(problems) > 0 {
		c.Status, c.Reason = metav1.ConditionFalse, "RulesIgnored"
		c.Message = strings.Join(problems, "; ")
		if len(c.Message) > 32768 { // the Condition schema's limit
			c.Message = c.Message[:32768]
		}
	}
	return c
}

// needsStatus says whether p's conditions differ from what weft would set.
func needsStatus(p *cnp.ClusterNetworkPolicy, want metav1.Condition) bool {
	cur := meta.FindStatusCondition(p.Status.Conditions, want.Type)
	return cur == nil || cur.Status != want.Status || cur.Reason != want.Reason ||
		cur.Message != want.Message || cur.ObservedGeneration != want.ObservedGeneration
}

// StatusWriter keeps each ClusterNetworkPolicy's Accepted condition, and
// an Event when rules are left out. Every agent runs one; the holder of
// StatusLease writes.
type StatusWriter struct {
	Kube      kubernetes.Interface
	Policies  npaclient.Interface
	Recorder  record.EventRecorder
	Namespace string // of the Lease
	Identity  string // this agent's node
	Log       *slog.Logger
}

// Run competes for the Lease until ctx ends, writing while it holds it.
func (w *StatusWriter) Run(ctx context.Context) {
	lock := &resourcelock.LeaseLock{LeaseMeta: metav1.ObjectMeta{Name: StatusLease, Namespace: w.Namespace},
		Client: w.Kube.CoordinationV1(), LockConfig: resourcelock.ResourceLockConfig{Identity: w.Identity}}
	for ctx.Err() == nil {
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock: lock, LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
			ReleaseOnCancel: true, Name: StatusLease,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: w.write,
				OnStoppedLeading: func() { w.Log.Info("no longer writes ClusterNetworkPolicy status") },
			},
		})
	}
}

// write keeps the status of every policy until ctx ends (the Lease lost).
func (w *StatusWriter) write(ctx context.Context) {
	w.Log.Info("writes ClusterNetworkPolicy status")
	factory := npainformers.NewSharedInformerFactory(w.Policies, 0)
	inf := factory.Policy().V1beta1().ClusterNetworkPolicies()
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer queue.ShutDown()
	enqueue := func(obj any) {
		if p, ok := obj.(*cnp.ClusterNetworkPolicy); ok && needsStatus(p, acceptedCondition(p)) {
			queue.Add(p.Name)
		}
	}
	_, _ = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, cur any) { enqueue(cur) }})
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	factory.WaitForCacheSync(ctx.Done())
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	for {
		name, quit := queue.Get()
		if quit {
			return
		}
		p, err := inf.Lister().Get(name)
		if err == nil {
			err = w.sync(ctx, p)
		}
		if err != nil && ctx.Err() == nil {
			w.Log.Warn("ClusterNetworkPolicy status", "policy", name, "err", err)
			queue.AddRateLimited(name)
		} else {
			queue.Forget(name)
		}
		queue.Done(name)
	}
}

func (w *StatusWriter) sync(ctx context.Context, p *cnp.ClusterNetworkPolicy) error {
	want := acceptedCondition(p)
	if !needsStatus(p, want) {
		return nil
	}
	cp := p.DeepCopy()
	meta.SetStatusCondition(&cp.Status.Conditions, want)
	if _, err := w.Policies.PolicyV1beta1().ClusterNetworkPolicies().UpdateStatus(ctx, cp, metav1.UpdateOptions{}); err != nil {
		return err
	}
	if want.Status == metav1.ConditionFalse && w.Recorder != nil {
		w.Recorder.Event(p, corev1.EventTypeWarning, "PolicyRuleIgnored", "weft left out: "+want.Message)
	}
	return nil
}
