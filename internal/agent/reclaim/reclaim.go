// Package reclaim frees pod addresses that weft-cni handed out and nobody
// uses: a plugin killed mid-ADD, or a runtime that deleted a sandbox
// without CNI DEL and never calls CNI GC. Without it such addresses leak
// until the node's range is exhausted.
package reclaim

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/internal/cni"
	"weft.dev/weft/internal/cni/ipam"
)

// DefaultGrace is how old an allocation must be before it may be
// reclaimed: an ADD in progress has allocated but its pod has no IP in the
// API yet.
const DefaultGrace = 2 * time.Minute

// Keep says whether an allocation is still in use: younger than grace, the
// IP of a pod on this node, or its host veth still there (the sandbox
// lives).
func Keep(ip string, owner ipam.Attachment, age, grace time.Duration, podIPs map[string]bool, linkExists func(string) bool) bool {
	if age < grace || podIPs[ip] {
		return true
	}
	return owner.ContainerID != "" && linkExists(cni.HostVethName(owner.ContainerID, owner.IfName))
}

// Reclaimer runs Keep over the store now and then.
type Reclaimer struct {
	Client     kubernetes.Interface
	NodeName   string
	DataDir    string // weft-cni's dataDir
	Network    string // the conflist's name
	Every      time.Duration
	Grace      time.Duration
	LinkExists func(name string) bool
	Log        *slog.Logger
	freed      prometheus.Counter
}

// New wires a reclaimer; reg may be nil.
func New(client kubernetes.Interface, nodeName, dataDir, network string, linkExists func(string) bool, log *slog.Logger, reg prometheus.Registerer) *Reclaimer {
	r := &Reclaimer{Client: client, NodeName: nodeName, DataDir: dataDir, Network: network, Every: time.Minute, Grace: DefaultGrace,
		LinkExists: linkExists, Log: log,
		freed: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_cni_addresses_reclaimed_total",
			Help: "Pod addresses freed by the agent because no pod and no sandbox used them."})}
	if reg != nil {
		reg.MustRegister(r.freed)
	}
	return r
}

// Run reclaims every Every until ctx ends.
func (r *Reclaimer) Run(ctx context.Context) {
	t := time.NewTicker(r.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.Once(ctx); err != nil {
				r.Log.Warn("address reclaim", "err", err)
			}
		}
	}
}

// Once reclaims what is unused now.
func (r *Reclaimer) Once(ctx context.Context) error {
	pods, err := r.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", r.NodeName).String()})
	if err != nil {
		return err // without the pod list nothing is known to be unused
	}
	podIPs := map[string]bool{}
	for _, p := range pods.Items {
		if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, ip := range p.Status.PodIPs {
			podIPs[net.ParseIP(ip.IP).String()] = true
		}
	}
	store, err := ipam.Open(r.DataDir, r.Network)
	if err != nil {
		return err
	}
	freed, err := store.Reclaim(func(ip string, owner ipam.Attachment, age time.Duration) bool {
		return Keep(ip, owner, age, r.Grace, podIPs, r.LinkExists)
	})
	if len(freed) > 0 {
		r.freed.Add(float64(len(freed)))
		r.Log.Info("reclaimed leaked pod addresses", "addresses", freed)
	}
	return err
}
