package kubelet

import (
	"net"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func TestStatusReadinessGatesAndInit(t *testing.T) {
	k := &Kubelet{}
	pod := &corev1.Pod{Spec: corev1.PodSpec{ReadinessGates: []corev1.PodReadinessGate{{ConditionType: "example.com/gate"}},
		Containers: []corev1.Container{{Name: "c"}}}}
	pr := &podRuntime{ips: []net.IP{net.ParseIP("10.244.1.2")}, started: time.Now(), initialized: true,
		containers: map[string]*containerRuntime{"c": {name: "c", running: true, ready: true}}, order: []string{"c"}}
	cond := func(st corev1.PodStatus, t corev1.PodConditionType) corev1.ConditionStatus {
		for _, c := range st.Conditions {
			if c.Type == t {
				return c.Status
			}
		}
		return ""
	}
	st := k.computeStatus(pod, pr, corev1.PodStatus{})
	if cond(st, corev1.ContainersReady) != corev1.ConditionTrue || cond(st, corev1.PodReady) != corev1.ConditionFalse {
		t.Fatalf("gate not set: containers %s, pod %s", cond(st, corev1.ContainersReady), cond(st, corev1.PodReady))
	}
	old := corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: "example.com/gate", Status: corev1.ConditionTrue}}}
	st = k.computeStatus(pod, pr, old)
	if cond(st, corev1.PodReady) != corev1.ConditionTrue || cond(st, "example.com/gate") != corev1.ConditionTrue {
		t.Fatalf("gate True: pod %s, gate kept %s", cond(st, corev1.PodReady), cond(st, "example.com/gate"))
	}
	pr.initialized = false
	if st = k.computeStatus(pod, pr, old); st.Phase != corev1.PodPending || cond(st, corev1.PodInitialized) != corev1.ConditionFalse {
		t.Fatalf("before init containers finish: phase %s initialized %s", st.Phase, cond(st, corev1.PodInitialized))
	}
}
