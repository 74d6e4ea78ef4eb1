package kubelet

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// computeStatus derives the pod status from what runs on the node.
func (k *Kubelet) computeStatus(pod *corev1.Pod, pr *podRuntime, old corev1.PodStatus) corev1.PodStatus {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	st := corev1.PodStatus{
		HostIP:    k.cfg.NodeIP.String(),
		HostIPs:   k.podHostIPs(),
		StartTime: &metav1.Time{Time: pr.started},
		QOSClass:  old.QOSClass,
	}
	if old.StartTime != nil {
		st.StartTime = old.StartTime
	}
	for _, ip := range pr.ips {
		st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip.String()})
	}
	if len(pr.ips) > 0 {
		st.PodIP = pr.ips[0].String()
	}
	allReady, anyRunning, allExited, allSucceeded := true, false, true, true
	for _, name := range pr.initOrder {
		cr := pr.containers[name]
		cs := containerStatus(pod, pr, cr)
		if cr.sidecar && !cs.Ready {
			allReady = false // sidecars count towards readiness
		}
		st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
	}
	for _, name := range pr.order {
		cr := pr.containers[name]
		cs := containerStatus(pod, pr, cr)
		if cs.State.Running != nil {
			anyRunning = true
		}
		if !cs.Ready {
			allReady = false
		}
		if cs.State.Terminated == nil {
			allExited = false
		} else if cs.State.Terminated.ExitCode != 0 {
			allSucceeded = false
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	switch {
	case pr.initFailed:
		st.Phase = corev1.PodFailed
	case !pr.initialized:
		st.Phase = corev1.PodPending
	case allExited && len(pr.order) > 0 && allSucceeded:
		st.Phase = corev1.PodSucceeded
	case allExited && len(pr.order) > 0:
		st.Phase = corev1.PodFailed
	case anyRunning || len(st.ContainerStatuses) > 0 && hasRestarting(st):
		st.Phase = corev1.PodRunning
	default:
		st.Phase = corev1.PodPending
	}
	now := metav1.Now()
	cond := func(t corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, LastTransitionTime: now, Reason: reason}
		if ok {
			c.Status, c.Reason = corev1.ConditionTrue, ""
		}
		for _, o := range old.Conditions {
			if o.Type == t && o.Status == c.Status {
				c.LastTransitionTime = o.LastTransitionTime
			}
		}
		return c
	}
	containersReady := allReady && anyRunning
	// Readiness gates: the pod is Ready only when every gate's condition,
	// set by someone else, is True too.
	gatesOK, gateReason := true, "ContainersNotReady"
	for _, g := range pod.Spec.ReadinessGates {
		ok := false
		for _, c := range old.Conditions {
			if c.Type == g.ConditionType && c.Status == corev1.ConditionTrue {
				ok = true
			}
		}
		if !ok {
			gatesOK, gateReason = false, "ReadinessGatesNotReady"
		}
	}
	if !containersReady {
		gateReason = "ContainersNotReady"
	}
	st.Conditions = []corev1.PodCondition{
		cond("PodReadyToStartContainers", len(pr.ips) > 0, "SandboxNotReady"),
		cond(corev1.PodInitialized, pr.initialized, "ContainersNotInitialized"),
		cond(corev1.ContainersReady, containersReady, "ContainersNotReady"),
		cond(corev1.PodReady, containersReady && gatesOK, gateReason),
		cond(corev1.PodScheduled, true, ""),
	}
	// Conditions owned by others (readiness gates, DisruptionTarget, ...)
	// are kept as they are.
	ours := map[corev1.PodConditionType]bool{}
	for _, c := range st.Conditions {
		ours[c.Type] = true
	}
	for _, c := range old.Conditions {
		if !ours[c.Type] {
			st.Conditions = append(st.Conditions, c)
		}
	}
	return st
}

func hasRestarting(st corev1.PodStatus) bool {
	for _, cs := range st.ContainerStatuses {
		if cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff" {
			return true
		}
	}
	return false
}

func restarting(pod *corev1.Pod, cr *containerRuntime, terminating bool) bool {
	switch {
	case terminating:
		return false
	case cr.sidecar:
		return true
	case cr.runOnce:
		// A completed init container stays terminated; a failed one is
		// retried unless the pod never restarts.
		return cr.exitCode != 0 && pod.Spec.RestartPolicy != corev1.RestartPolicyNever
	}
	return shouldRestart(pod.Spec.RestartPolicy, cr.exitCode)
}

func exitReason(code int) string {
	if code == 0 {
		return "Completed"
	}
	return "Error"
}

func ptrBool(b bool) *bool { return &b }

// updatePodStatus writes the computed status if it changed.
func (k *Kubelet) updatePodStatus(ctx context.Context, pod *corev1.Pod, pr *podRuntime) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		latest, err := k.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		// Terminating pods keep reporting (readiness probes run during
		// the grace period, as the kubelet's do): a server that fails
		// its probe while draining must show up as not ready.
		if latest.UID != pr.uid {
			return nil
		}
		// Failed and Succeeded are final (an evicted pod stays Failed).
		if latest.Status.Phase == corev1.PodFailed || latest.Status.Phase == corev1.PodSucceeded {
			return nil
		}
		st := k.computeStatus(latest, pr, latest.Status)
		if statusEqual(latest.Status, st) {
			return nil
		}
		latest.Status = st
		_, err = k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, latest, metav1.UpdateOptions{})
		return err
	})
}

// statusEqual ignores timestamps that computeStatus refreshes.
func statusEqual(a, b corev1.PodStatus) bool {
	if a.Phase != b.Phase || a.PodIP != b.PodIP || a.HostIP != b.HostIP || len(a.Conditions) != len(b.Conditions) ||
		len(a.ContainerStatuses) != len(b.ContainerStatuses) {
		return false
	}
	for i := range a.Conditions {
		if a.Conditions[i].Type != b.Conditions[i].Type || a.Conditions[i].Status != b.Conditions[i].Status {
			return false
		}
	}
	for i := range a.ContainerStatuses {
		x, y := a.ContainerStatuses[i], b.ContainerStatuses[i]
		if x.Name != y.Name || x.Ready != y.Ready || x.RestartCount != y.RestartCount ||
			(x.State.Running == nil) != (y.State.Running == nil) ||
			(x.State.Terminated == nil) != (y.State.Terminated == nil) ||
			(x.State.Waiting == nil) != (y.State.Waiting == nil) {
			return false
		}
		if x.State.Running != nil && !x.State.Running.StartedAt.Time.Truncate(time.Second).Equal(y.State.Running.StartedAt.Time.Truncate(time.Second)) {
			return false
		}
	}
	return true
}

func setCondition(st *corev1.PodStatus, c corev1.PodCondition) {
	c.LastTransitionTime = metav1.Now()
	for i := range st.Conditions {
		if st.Conditions[i].Type == c.Type {
			st.Conditions[i] = c
			return
		}
	}
	st.Conditions = append(st.Conditions, c)
}

// containerStatus reports one container as the kubelet would.
func containerStatus(pod *corev1.Pod, pr *podRuntime, cr *containerRuntime) corev1.ContainerStatus {
	name := cr.name
	cs := corev1.ContainerStatus{
		Name: name, Image: cr.spec.Image, ImageID: "weft-lab://" + cr.spec.Image,
		RestartCount: cr.restarts, Ready: cr.ready && cr.running,
		Started: ptrBool(cr.running),
	}
	if cr.everStarted {
		cs.ContainerID = "weft-lab://" + string(pr.uid) + "/" + name
	}
	switch {
	case cr.running:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.Time{Time: cr.startedAt}}
	case cr.exited && !restarting(pod, cr, pr.terminating):
		cs.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: int32(cr.exitCode),
			StartedAt: metav1.Time{Time: cr.startedAt}, FinishedAt: metav1.Time{Time: cr.finishedAt},
			Reason: exitReason(cr.exitCode), ContainerID: cs.ContainerID}
	case cr.exited:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
			Message: "back-off restarting failed container " + name}
		cs.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: int32(cr.exitCode),
			StartedAt: metav1.Time{Time: cr.startedAt}, FinishedAt: metav1.Time{Time: cr.finishedAt}, Reason: exitReason(cr.exitCode)}
	default:
		reason := cr.waitingFor
		if reason == "" {
			reason = "ContainerCreating"
		}
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: cr.lastErr}
	}
	return cs
}
