package kubelet

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// NetNSPrefix names pod network namespaces so cleanup can find them.
const NetNSPrefix = "weft-pod-"

// podRuntime is what the node runs for one pod.
type podRuntime struct {
	key         string
	uid         types.UID
	dir         string
	netnsName   string
	hostNetwork bool // runs in the node's namespace: no sandbox, no CNI
	ips         []net.IP
	started     time.Time

	mu          sync.Mutex
	containers  map[string]*containerRuntime
	order       []string // regular containers
	initOrder   []string // init containers, in spec order
	initialized bool     // every init container completed (or, for sidecars, started)
	initFailed  bool     // an init container failed under restartPolicy Never
	terminating bool
	deleting    bool // graceful deletion under way (hooks, grace period)
	stopped     chan struct{}
	stopOnce    sync.Once
}

type containerRuntime struct {
	name     string
	spec     corev1.Container
	logPath  string
	specPath string

	cmd         *exec.Cmd
	running     bool
	startedAt   time.Time
	exitCode    int
	exited      bool
	finishedAt  time.Time
	restarts    int32
	crashes     int // restarts since the container last ran backoffReset
	ready       bool
	lastErr     string
	waitingFor  string
	everStarted bool
	// sidecar: an init container with restartPolicy Always; it keeps
	// running beside the regular containers and is always restarted.
	sidecar bool
	// runOnce: a regular init container, run to completion, never
	// restarted by startContainer (runInit retries it).
	runOnce bool
	done    chan int // runOnce: receives the exit code
}

// NetNSName returns the network namespace name of a pod.
func NetNSName(uid types.UID) string { return NetNSPrefix + string(uid) }

func (k *Kubelet) podDir(uid types.UID) string {
	return filepath.Join(k.cfg.StateDir, "pods", string(uid))
}

func (k *Kubelet) syncPod(ctx context.Context, key string) error {
	obj, exists, err := k.podInformer.GetIndexer().GetByKey(key)
	if err != nil {
		return err
	}
	k.mu.Lock()
	pr := k.pods[key]
	k.mu.Unlock()

	if !exists {
		if pr != nil {
			k.teardown(ctx, pr, 0)
		}
		return nil
	}
	pod := obj.(*corev1.Pod)
	if pr != nil && pr.uid != pod.UID {
		// Same name, new pod: the old one is gone.
		k.teardown(ctx, pr, 0)
		pr = nil
	}
	if pod.DeletionTimestamp != nil {
		grace := int64(30)
		if pod.DeletionGracePeriodSeconds != nil {
			grace = *pod.DeletionGracePeriodSeconds
		}
		finish := func() error {
			err := k.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
				GracePeriodSeconds: ptr.To[int64](0),
				Preconditions:      &metav1.Preconditions{UID: &pod.UID},
			})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				return err
			}
			return nil
		}
		if pr == nil {
			return finish()
		}
		// Termination (preStop hooks, SIGTERM, the grace period) runs on
		// its own: a pod that takes minutes to stop must not hold a worker.
		pr.mu.Lock()
		started := pr.deleting
		pr.deleting = true
		pr.mu.Unlock()
		if !started {
			go func() {
				k.teardownWithHooks(ctx, pod, pr, time.Duration(grace)*time.Second)
				if err := finish(); err != nil {
					k.log.Error("deleting pod", "pod", pr.key, "err", err)
				}
			}()
		}
		// Probe results during the grace period still reach the API.
		return k.updatePodStatus(ctx, pod, pr)
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	if pr == nil {
		pr, err = k.startPod(ctx, pod)
		if err != nil {
			k.reportStartError(ctx, pod, err)
			return err
		}
	}
	return k.updatePodStatus(ctx, pod, pr)
}

// startPod creates the sandbox (netns + CNI ADD) and starts the containers.
func (k *Kubelet) startPod(ctx context.Context, pod *corev1.Pod) (*podRuntime, error) {
	key := pod.Namespace + "/" + pod.Name
	pr := &podRuntime{key: key, uid: pod.UID, dir: k.podDir(pod.UID), netnsName: NetNSName(pod.UID),
		containers: map[string]*containerRuntime{}, stopped: make(chan struct{}), started: time.Now()}
	if err := os.MkdirAll(pr.dir, 0o755); err != nil {
		return nil, err
	}
	if pod.Spec.HostNetwork {
		// The node's own namespace (the lab node runs in it), by name.
		pr.hostNetwork, pr.netnsName = true, k.cfg.NodeName
		pr.ips = k.hostIPs()
	}
	// Volumes first: their API reads can fail transiently (the node
	// authorizer learns of a new pod a moment after it is bound), and a
	// retry should not cost a CNI ADD/DEL round.
	for _, v := range pod.Spec.Volumes {
		if err := k.writeVolume(ctx, pod, pr, v); err != nil {
			return nil, fmt.Errorf("volume %q: %w", v.Name, err)
		}
	}
	if !pr.hostNetwork {
		if err := k.createSandbox(ctx, pod, pr); err != nil {
			k.destroySandbox(ctx, pr)
			return nil, err
		}
	}
	if err := k.writePodFiles(ctx, pod, pr); err != nil {
		k.destroySandbox(ctx, pr)
		return nil, err
	}
	k.mu.Lock()
	k.pods[key] = pr
	k.mu.Unlock()

	newRuntime := func(c corev1.Container) *containerRuntime {
		return &containerRuntime{name: c.Name, spec: c,
			logPath:  filepath.Join(pr.dir, c.Name+".log"),
			specPath: filepath.Join(pr.dir, c.Name+".spec.json")}
	}
	for _, c := range pod.Spec.InitContainers {
		cr := newRuntime(c)
		cr.sidecar = c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		cr.runOnce = !cr.sidecar
		pr.containers[c.Name] = cr
		pr.initOrder = append(pr.initOrder, c.Name)
	}
	for _, c := range pod.Spec.Containers {
		pr.containers[c.Name] = newRuntime(c)
		pr.order = append(pr.order, c.Name)
	}
	pr.initialized = len(pr.initOrder) == 0
	// Init containers may take their time: run the sequence off the
	// sync worker.
	go k.runContainers(ctx, pod, pr)
	k.log.Info("pod started", "pod", key, "ips", pr.ips)
	return pr, nil
}

// runContainers runs init containers in order (each regular one to
// completion, retried with back-off unless restartPolicy is Never; sidecars
// started and left running), then starts the regular containers.
func (k *Kubelet) runContainers(ctx context.Context, pod *corev1.Pod, pr *podRuntime) {
	start := func(cr *containerRuntime) bool {
		if err := k.prepareContainer(ctx, pod, pr, cr); err != nil {
			pr.mu.Lock()
			cr.lastErr, cr.waitingFor = err.Error(), "CreateContainerConfigError"
			pr.mu.Unlock()
			k.log.Warn("container config error", "pod", pr.key, "container", cr.name, "err", err)
			return false
		}
		k.startContainer(pod, pr, cr)
		if !cr.runOnce {
			go k.probeLoop(ctx, pod, pr, cr)
		}
		return true
	}
	for _, name := range pr.initOrder {
		cr := pr.containers[name]
		if cr.sidecar {
			if !start(cr) {
				return
			}
			continue
		}
		for attempt := 0; ; attempt++ {
			cr.done = make(chan int, 1)
			if !start(cr) {
				return
			}
			var code int
			select {
			case code = <-cr.done:
			case <-pr.stopped:
				return
			}
			k.queue.Add(pr.key)
			if code == 0 {
				break
			}
			if pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
				pr.mu.Lock()
				pr.initFailed = true
				pr.mu.Unlock()
				k.queue.Add(pr.key)
				return
			}
			pr.mu.Lock()
			cr.restarts++
			pr.mu.Unlock()
			select {
			case <-pr.stopped:
				return
			case <-time.After(time.Duration(1<<min(attempt, 5)) * time.Second):
			}
		}
	}
	pr.mu.Lock()
	pr.initialized = true
	pr.mu.Unlock()
	k.queue.Add(pr.key)
	for _, name := range pr.order {
		start(pr.containers[name])
	}
	// Report the started containers: a sync that ran while they were
	// still being created found nothing to write, so no informer event
	// would bring the pod back to the queue.
	k.queue.Add(pr.key)
}

func (k *Kubelet) cniRuntimeConf(pod *corev1.Pod, pr *podRuntime) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: string(pr.uid),
		NetNS:       "/run/netns/" + pr.netnsName,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", pod.Namespace},
			{"K8S_POD_NAME", pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", string(pr.uid)},
			{"K8S_POD_UID", string(pr.uid)},
		},
	}
}

func (k *Kubelet) createSandbox(ctx context.Context, pod *corev1.Pod, pr *podRuntime) error {
	if err := createNetNS(pr.netnsName); err != nil {
		return err
	}
	list, err := k.loadCNI()
	if err != nil {
		return fmt.Errorf("network not ready: %w", err)
	}
	cc := k.cniConfig()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := cc.AddNetworkList(cctx, list, k.cniRuntimeConf(pod, pr))
	if err != nil {
		return fmt.Errorf("CNI ADD: %w", err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return err
	}
	for _, ipc := range r.IPs {
		pr.ips = append(pr.ips, ipc.Address.IP)
	}
	if len(pr.ips) == 0 {
		return fmt.Errorf("CNI ADD returned no IPs")
	}
	return nil
}

// destroySandbox runs CNI DEL and removes the netns; safe to repeat.
func (k *Kubelet) destroySandbox(ctx context.Context, pr *podRuntime) {
	if pr.hostNetwork {
		_ = os.RemoveAll(pr.dir)
		return
	}
	if list, err := k.loadCNI(); err == nil {
		cc := k.cniConfig()
		rt := &libcni.RuntimeConf{ContainerID: string(pr.uid), NetNS: "/run/netns/" + pr.netnsName, IfName: "eth0"}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := cc.DelNetworkList(cctx, list, rt); err != nil {
			k.log.Warn("CNI DEL failed", "pod", pr.key, "err", err)
		}
		cancel()
	}
	_ = netns.DeleteNamed(pr.netnsName)
	_ = os.RemoveAll(pr.dir)
}

func createNetNS(name string) error {
	if _, err := os.Stat("/run/netns/" + name); err == nil {
		return nil
	}
	// `ip netns add` creates and pins the namespace without moving us into it.
	out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	out, err = exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput()
	if err != nil {
		return fmt.Errorf("lo up in %s: %v: %s", name, err, out)
	}
	return nil
}

// teardownWithHooks runs the containers' preStop hooks (within the grace
// period), then tears the pod down with what is left of it, at least 2 s,
// as the kubelet does.
func (k *Kubelet) teardownWithHooks(ctx context.Context, pod *corev1.Pod, pr *podRuntime, grace time.Duration) {
	deadline := time.Now().Add(grace)
	pr.mu.Lock()
	var hooked []*containerRuntime
	for _, cr := range pr.containers {
		if cr.running && cr.spec.Lifecycle != nil && cr.spec.Lifecycle.PreStop != nil {
			hooked = append(hooked, cr)
		}
	}
	pr.mu.Unlock()
	var wg sync.WaitGroup
	for _, cr := range hooked {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hctx, cancel := context.WithDeadline(ctx, deadline)
			defer cancel()
			if err := k.runHandler(hctx, pod, pr, cr, cr.spec.Lifecycle.PreStop); err != nil {
				k.log.Info("preStop hook failed", "pod", pr.key, "container", cr.name, "err", err)
			}
		}()
	}
	wg.Wait()
	rest := time.Until(deadline)
	if len(hooked) > 0 && rest < 2*time.Second {
		rest = 2 * time.Second
	}
	k.teardown(ctx, pr, rest)
}

// runHandler runs a lifecycle handler: exec in the container, HTTP GET or
// TCP connect to the pod, or sleep.
func (k *Kubelet) runHandler(ctx context.Context, pod *corev1.Pod, pr *podRuntime, cr *containerRuntime, h *corev1.LifecycleHandler) error {
	if h.Sleep != nil {
		select {
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
		case <-ctx.Done():
		}
		return nil
	}
	p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: h.Exec, HTTPGet: h.HTTPGet, TCPSocket: h.TCPSocket}}
	timeout := time.Minute
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	return k.probeOnce(ctx, pod, pr, cr, p, timeout)
}

// teardown stops all containers (SIGTERM, grace, SIGKILL), runs CNI DEL
// and removes the netns and the pod's files.
func (k *Kubelet) teardown(ctx context.Context, pr *podRuntime, grace time.Duration) {
	pr.stopOnce.Do(func() {
		pr.mu.Lock()
		pr.terminating = true
		var cmds []*exec.Cmd
		for _, cr := range pr.containers {
			if cr.running && cr.cmd != nil && cr.cmd.Process != nil {
				cmds = append(cmds, cr.cmd)
			}
		}
		pr.mu.Unlock()
		for _, c := range cmds {
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
		}
		deadline := time.Now().Add(grace)
		for time.Now().Before(deadline) && k.anyRunning(pr) {
			time.Sleep(100 * time.Millisecond)
		}
		for _, c := range cmds {
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		}
		for i := 0; i < 50 && k.anyRunning(pr); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		k.destroySandbox(ctx, pr)
		k.mu.Lock()
		if k.pods[pr.key] == pr {
			delete(k.pods, pr.key)
		}
		k.mu.Unlock()
		close(pr.stopped)
		k.log.Info("pod stopped", "pod", pr.key)
	})
}

func (k *Kubelet) anyRunning(pr *podRuntime) bool {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	for _, cr := range pr.containers {
		if cr.running {
			return true
		}
	}
	return false
}

// startContainer launches the process and a goroutine that waits for it
// and applies the restart policy.
func (k *Kubelet) startContainer(pod *corev1.Pod, pr *podRuntime, cr *containerRuntime) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.terminating {
		return
	}
	argv, env, err := k.containerCommand(pod, pr, cr.spec)
	if err != nil {
		cr.lastErr, cr.waitingFor = err.Error(), "CreateContainerConfigError"
		return
	}
	logw, err := newLogWriter(cr.logPath)
	if err != nil {
		cr.lastErr, cr.waitingFor = err.Error(), "RunContainerError"
		return
	}
	cmd := exec.Command(k.cfg.WeftBinary, append([]string{"lab", "run-container", "--spec", cr.specPath, "--"}, argv...)...)
	cmd.Env = env
	cmd.Stdout = logw.stream("stdout")
	cmd.Stderr = logw.stream("stderr")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logw.Close()
		cr.lastErr, cr.waitingFor = err.Error(), "RunContainerError"
		return
	}
	cr.cmd, cr.running, cr.exited, cr.startedAt, cr.everStarted, cr.waitingFor = cmd, true, false, time.Now(), true, ""
	cr.ready = cr.spec.ReadinessProbe == nil
	go func() {
		err := cmd.Wait()
		logw.Close()
		code := 0
		if err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					code = 128 + int(ws.Signal())
				}
			} else {
				code = 128
			}
		}
		pr.mu.Lock()
		cr.running, cr.exited, cr.exitCode, cr.finishedAt, cr.ready = false, true, code, time.Now(), false
		policy := pod.Spec.RestartPolicy
		switch {
		case cr.sidecar:
			policy = corev1.RestartPolicyAlways
		case cr.runOnce:
			policy = corev1.RestartPolicyNever // runContainers decides
			cr.done <- code
		}
		restart := !pr.terminating && shouldRestart(policy, code)
		if cr.finishedAt.Sub(cr.startedAt) >= backoffReset {
			cr.crashes = 0
		}
		backoff := time.Duration(1<<min(cr.crashes, 5)) * time.Second
		pr.mu.Unlock()
		k.queue.Add(pr.key)
		if restart {
			select {
			case <-pr.stopped:
				return
			case <-time.After(backoff):
			}
			pr.mu.Lock()
			cr.restarts++
			cr.crashes++
			pr.mu.Unlock()
			k.startContainer(pod, pr, cr)
			k.queue.Add(pr.key)
		}
	}()
}

// backoffReset: a container that ran this long before it exited restarts
// after the shortest back-off again (the kubelet waits 10 minutes; tests
// that kill an agent every few seconds cannot).
const backoffReset = 10 * time.Second

func shouldRestart(policy corev1.RestartPolicy, code int) bool {
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0
	default:
		return true
	}
}

func (k *Kubelet) reportStartError(ctx context.Context, pod *corev1.Pod, err error) {
	p, gerr := k.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if gerr != nil || p.UID != pod.UID {
		return
	}
	p.Status.Phase = corev1.PodPending
	p.Status.HostIP = k.cfg.NodeIP.String()
	p.Status.HostIPs = k.podHostIPs()
	setCondition(&p.Status, corev1.PodCondition{Type: "PodReadyToStartContainers", Status: corev1.ConditionFalse,
		Reason: "SandboxCreateFailed", Message: truncate(err.Error(), 512)})
	_, _ = k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// cleanupStale removes pods left by an earlier run of this node: their
// processes died with it, so only the sandbox is left to tear down.
func (k *Kubelet) cleanupStale(ctx context.Context) {
	entries, _ := os.ReadDir(filepath.Join(k.cfg.StateDir, "pods"))
	for _, e := range entries {
		uid := types.UID(e.Name())
		pr := &podRuntime{key: "stale/" + e.Name(), uid: uid, dir: k.podDir(uid), netnsName: NetNSName(uid)}
		k.destroySandbox(ctx, pr)
	}
	if len(entries) > 0 {
		k.log.Info("removed pods of an earlier run", "count", len(entries))
	}
}
