package kubelet

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// evictionLoop evicts pods whose containers wrote more than their
// ephemeral-storage limit, as the kubelet's eviction manager does for
// local storage limits. What a lab container writes outside its volumes
// lands on its own root (a tmpfs the container runtime builds); that
// root's files are its writable layer.
func (k *Kubelet) evictionLoop(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, pr := range k.podRuntimes() {
			if msg := overStorageLimit(pr); msg != "" {
				k.evict(ctx, pr, msg)
			}
		}
	}
}

// overStorageLimit returns the eviction message of the first running
// container of pr above its ephemeral-storage limit, or "".
func overStorageLimit(pr *podRuntime) string {
	type running struct {
		name  string
		pid   int
		limit resource.Quantity
	}
	var check []running
	pr.mu.Lock()
	if pr.terminating || pr.deleting {
		pr.mu.Unlock()
		return ""
	}
	for _, cr := range pr.containers {
		limit, ok := cr.spec.Resources.Limits[corev1.ResourceEphemeralStorage]
		if ok && cr.running && cr.cmd != nil && cr.cmd.Process != nil {
			check = append(check, running{cr.name, cr.cmd.Process.Pid, limit})
		}
	}
	pr.mu.Unlock()
	var host syscall.Stat_t
	if syscall.Stat("/", &host) != nil {
		return ""
	}
	for _, c := range check {
		root := fmt.Sprintf("/proc/%d/root", c.pid)
		var st syscall.Stat_t
		if syscall.Stat(root, &st) != nil || st.Dev == host.Dev {
			// No root of its own: what it writes cannot be told from
			// the host's files.
			continue
		}
		used, err := writableUsage(root)
		if err == nil && used > c.limit.Value() {
			return fmt.Sprintf("Container %s exceeded its local ephemeral storage limit %q. ", c.name, c.limit.String())
		}
	}
	return ""
}

// writableUsage sums the sizes of the files on root's own filesystem,
// not descending into what is mounted on it (the host directories a lab
// container's root binds in). root may be a symbolic link to a directory.
func writableUsage(root string) (int64, error) {
	// /proc/PID/root is a symbolic link: walk what it points to.
	root += "/"
	var st syscall.Stat_t
	if err := syscall.Stat(root, &st); err != nil {
		return 0, err
	}
	dev := st.Dev
	var total int64
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // gone while walking
		}
		var s syscall.Stat_t
		if syscall.Lstat(path, &s) != nil {
			return nil
		}
		if s.Dev != dev {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() {
			total += s.Blocks * 512
		}
		return nil
	})
	return total, err
}

// evict stops the pod at once and marks it Failed with reason Evicted, as
// the kubelet does for a local storage limit.
func (k *Kubelet) evict(ctx context.Context, pr *podRuntime, msg string) {
	k.log.Warn("evicting pod", "pod", pr.key, "reason", msg)
	k.teardown(ctx, pr, 0)
	ns, name, _ := cache.SplitMetaNamespaceKey(pr.key)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := k.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil || pod.UID != pr.uid {
			return err
		}
		now := metav1.Now()
		pod.Status.Phase, pod.Status.Reason, pod.Status.Message = corev1.PodFailed, "Evicted", msg
		for i, c := range pod.Status.Conditions {
			if c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
				pod.Status.Conditions[i].Status, pod.Status.Conditions[i].LastTransitionTime = corev1.ConditionFalse, now
			}
		}
		pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: corev1.DisruptionTarget,
			Status: corev1.ConditionTrue, Reason: "TerminationByKubelet", Message: msg, LastTransitionTime: now})
		for i := range pod.Status.ContainerStatuses {
			cs := &pod.Status.ContainerStatuses[i]
			if cs.State.Running != nil {
				cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137,
					Reason: "Error", StartedAt: cs.State.Running.StartedAt, FinishedAt: now}}
			}
			cs.Ready = false
		}
		_, err = k.client.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		k.log.Error("evicted pod status", "pod", pr.key, "err", err)
	}
}
