// Package kubelet is the lab node agent ("kubelet-lite"): it registers its
// Node, renews its Lease, runs the pods bound to it as processes in their
// own network namespaces (set up by weft-cni through libcni, exactly as a
// container runtime does), reports pod status and serves container logs on
// the kubelet port. It exists so weft can be tested against the real
// Kubernetes control plane without a container runtime.
package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/utils/ptr"
)

// Version is what the lab node reports as its kubelet version.
const Version = "v1.37.2-weft-lab"

// Config describes one lab node.
type Config struct {
	NodeName string
	NodeIP   net.IP
	NodeIP6  net.IP // dual-stack: the node's IPv6 InternalIP (nil otherwise)
	Labels   map[string]string
	Taints   []corev1.Taint
	// HostRoot, when set, is this node's root directory: hostPath volumes
	// and CNI plugins see it as "/" (lab nodes share one machine).
	HostRoot string
	// Images is the lab's image table file (image.Table): containers of
	// its images run in their unpacked root filesystems.
	Images      string
	CNIConfDir  string // where the agent writes the conflist
	CNIBinDir   string
	CNICacheDir string
	StateDir    string // pods' files: logs, volumes, resolv.conf
	NodeLogDir  string // served read-only at /logs/ on the kubelet API
	WeftBinary  string // runs `weft lab run-container` and `weft testserver`
	// AgnhostBinary runs containers of agnhost images (the upstream e2e
	// test image); it is also mounted at /agnhost, where tests call it.
	AgnhostBinary string
	ClusterDNS    string
	ClusterDomain string
	ServingCert   string
	ServingKey    string
	ClientCA      string
	Port          int
}

// Kubelet is one lab node's agent.
type Kubelet struct {
	cfg    Config
	client kubernetes.Interface
	log    *slog.Logger

	podInformer cache.SharedIndexInformer
	queue       workqueue.TypedRateLimitingInterface[string]

	mu   sync.Mutex
	pods map[string]*podRuntime // key: namespace/name

	netReady   bool
	netMessage string

	streaming streaming.Server // kubectl exec
}

// New wires a kubelet; call Run to start it.
func New(cfg Config, client kubernetes.Interface, log *slog.Logger) *Kubelet {
	if cfg.Port == 0 {
		cfg.Port = 10250
	}
	return &Kubelet{
		cfg:    cfg,
		client: client,
		log:    log,
		// Retries back off to 10 s at most, as the kubelet retries a pod
		// every sync period: the controller default (up to 1000 s) would
		// leave a pod that failed to start for a minute pending for many.
		queue: workqueue.NewTypedRateLimitingQueue(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 10*time.Second)),
		pods: map[string]*podRuntime{},
	}
}

// Run registers the node and serves until ctx ends.
func (k *Kubelet) Run(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Join(k.cfg.StateDir, "pods"), 0o755); err != nil {
		return err
	}
	if err := k.writeCNIExecSpec(); err != nil {
		return err
	}
	k.cleanupStale(ctx)
	k.checkNetwork(ctx)
	if err := k.registerNode(ctx); err != nil {
		return fmt.Errorf("register node: %w", err)
	}
	go k.leaseLoop(ctx)
	go k.nodeStatusLoop(ctx)
	go k.podResyncLoop(ctx)
	go k.evictionLoop(ctx)
	go func() {
		if err := k.serveAPI(ctx); err != nil {
			k.log.Error("kubelet API server stopped", "err", err)
		}
	}()

	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", k.cfg.NodeName).String()
		}))
	k.podInformer = factory.Core().V1().Pods().Informer()
	_, _ = k.podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { k.enqueue(o) },
		UpdateFunc: func(_, o any) { k.enqueue(o) },
		DeleteFunc: func(o any) { k.enqueue(o) },
	})
	factory.Start(ctx.Done())
	cache.WaitForCacheSync(ctx.Done(), k.podInformer.HasSynced)
	k.log.Info("lab node running", "node", k.cfg.NodeName, "ip", k.cfg.NodeIP)

	for i := 0; i < 4; i++ {
		go k.worker(ctx)
	}
	<-ctx.Done()
	k.queue.ShutDown()
	return nil
}

func (k *Kubelet) enqueue(o any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(o)
	if err == nil {
		k.queue.Add(key)
	}
}

func (k *Kubelet) worker(ctx context.Context) {
	for {
		key, quit := k.queue.Get()
		if quit {
			return
		}
		err := k.syncPod(ctx, key)
		if err != nil {
			k.log.Warn("pod sync failed; will retry", "pod", key, "err", err)
			k.queue.AddRateLimited(key)
		} else {
			k.queue.Forget(key)
		}
		k.queue.Done(key)
	}
}

// checkNetwork asks the CNI plugin for STATUS, as the kubelet's runtime
// does: the node is Ready only once pods can get a network.
func (k *Kubelet) checkNetwork(ctx context.Context) {
	list, err := k.loadCNI()
	ready, msg := true, ""
	if err != nil {
		ready, msg = false, "network plugin not ready: "+err.Error()
	} else {
		cc := k.cniConfig()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = cc.GetStatusNetworkList(cctx, list)
		cancel()
		if err != nil {
			ready, msg = false, "network plugin not ready: "+err.Error()
		}
	}
	k.mu.Lock()
	changed := ready != k.netReady
	k.netReady, k.netMessage = ready, msg
	k.mu.Unlock()
	if changed {
		k.log.Info("network readiness changed", "ready", ready, "message", msg)
	}
}

func (k *Kubelet) loadCNI() (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(k.cfg.CNIConfDir, []string{".conflist"})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no CNI conflist in %s", k.cfg.CNIConfDir)
	}
	return libcni.ConfListFromFile(files[0])
}

func (k *Kubelet) nodeObject() *corev1.Node {
	labels := map[string]string{
		"kubernetes.io/hostname": k.cfg.NodeName,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     runtime.GOARCH,
	}
	for key, v := range k.cfg.Labels {
		labels[key] = v
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: k.cfg.NodeName, Labels: labels},
		Spec:       corev1.NodeSpec{Taints: k.cfg.Taints},
	}
}

// mergeLabels sets the node's own labels on an existing Node.
func (k *Kubelet) mergeLabels(ctx context.Context) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": k.nodeObject().Labels}})
	if err != nil {
		return err
	}
	_, err = k.client.CoreV1().Nodes().Patch(ctx, k.cfg.NodeName, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

func (k *Kubelet) registerNode(ctx context.Context) error {
	for {
		_, err := k.client.CoreV1().Nodes().Create(ctx, k.nodeObject(), metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			// Someone registered the Node first (the lab does for the
			// control plane): add our labels, as the kubelet does.
			err = k.mergeLabels(ctx)
		}
		if err == nil {
			if err = k.updateNodeStatus(ctx); err == nil {
				return nil
			}
		}
		k.log.Warn("node registration failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// updateNodeStatus writes the node's status, retrying on conflicts (the
// node controller writes the same object, e.g. when it assigns podCIDRs).
func (k *Kubelet) updateNodeStatus(ctx context.Context) error {
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error { return k.updateNodeStatusOnce(ctx) })
}

func (k *Kubelet) updateNodeStatusOnce(ctx context.Context) error {
	node, err := k.client.CoreV1().Nodes().Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.Now()
	k.mu.Lock()
	netReady, netMsg := k.netReady, k.netMessage
	k.mu.Unlock()
	ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		Message: "lab node is posting ready status", LastHeartbeatTime: now}
	if !netReady {
		ready.Status, ready.Reason, ready.Message = corev1.ConditionFalse, "KubeletNotReady", netMsg
	}
	conds := []corev1.NodeCondition{
		ready,
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", LastHeartbeatTime: now},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", LastHeartbeatTime: now},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", LastHeartbeatTime: now},
	}
	// Keep transition times stable when the status did not change.
	for i := range conds {
		conds[i].LastTransitionTime = now
		for _, old := range node.Status.Conditions {
			if old.Type == conds[i].Type && old.Status == conds[i].Status {
				conds[i].LastTransitionTime = old.LastTransitionTime
			}
		}
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("8"),
		corev1.ResourceMemory:           resource.MustParse("16Gi"),
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	uname := unameRelease()
	node.Status = corev1.NodeStatus{
		Capacity:        capacity,
		Allocatable:     capacity,
		Conditions:      conds,
		Addresses:       k.nodeAddresses(),
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(k.cfg.Port)}},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID: k.cfg.NodeName, SystemUUID: k.cfg.NodeName, BootID: k.cfg.NodeName,
			KernelVersion: uname, OSImage: "weft lab node", ContainerRuntimeVersion: "weft-lab://" + Version,
			KubeletVersion: Version, OperatingSystem: "linux", Architecture: runtime.GOARCH,
		},
	}
	_, err = k.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

func (k *Kubelet) nodeStatusLoop(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		k.mu.Lock()
		before := k.netReady
		k.mu.Unlock()
		k.checkNetwork(ctx)
		k.mu.Lock()
		changed := before != k.netReady
		k.mu.Unlock()
		// Report at once when readiness changes, else every 20 s.
		if changed || time.Since(last) > 20*time.Second {
			if err := k.updateNodeStatus(ctx); err != nil {
				k.log.Warn("node status update failed", "err", err)
				continue
			}
			last = time.Now()
		}
	}
}

// podResyncLoop queues every pod of the node now and then, as the
// kubelet's periodic sync does: a status change that no event announced
// (a missed wake-up) is still reported within seconds.
func (k *Kubelet) podResyncLoop(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, pr := range k.podRuntimes() {
			k.queue.Add(pr.key)
		}
	}
}

// podRuntimes returns the pods the node runs now.
func (k *Kubelet) podRuntimes() []*podRuntime {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]*podRuntime, 0, len(k.pods))
	for _, pr := range k.pods {
		out = append(out, pr)
	}
	return out
}

func (k *Kubelet) leaseLoop(ctx context.Context) {
	leases := k.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	for {
		now := metav1.NewMicroTime(time.Now())
		lease, err := leases.Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			node, nerr := k.client.CoreV1().Nodes().Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
			l := &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: k.cfg.NodeName, Namespace: corev1.NamespaceNodeLease},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(k.cfg.NodeName),
					LeaseDurationSeconds: ptr.To[int32](40), RenewTime: &now},
			}
			if nerr == nil {
				l.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
			}
			_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		case err == nil:
			lease.Spec.RenewTime = &now
			_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			k.log.Warn("lease renewal failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}

// nodeAddresses: the InternalIPs (IPv4 first, then IPv6 on a dual-stack
// lab, as the kubelet orders --node-ip) and the hostname.
func (k *Kubelet) nodeAddresses() []corev1.NodeAddress {
	out := []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: k.cfg.NodeIP.String()}}
	if k.cfg.NodeIP6 != nil {
		out = append(out, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: k.cfg.NodeIP6.String()})
	}
	return append(out, corev1.NodeAddress{Type: corev1.NodeHostName, Address: k.cfg.NodeName})
}

// hostIPs are the node's addresses as pods see them (status.hostIPs, and
// podIPs of hostNetwork pods).
func (k *Kubelet) hostIPs() []net.IP {
	if k.cfg.NodeIP6 != nil {
		return []net.IP{k.cfg.NodeIP, k.cfg.NodeIP6}
	}
	return []net.IP{k.cfg.NodeIP}
}

func (k *Kubelet) podHostIPs() []corev1.HostIP {
	var out []corev1.HostIP
	for _, ip := range k.hostIPs() {
		out = append(out, corev1.HostIP{IP: ip.String()})
	}
	return out
}
