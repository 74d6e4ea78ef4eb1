// Package hostport serves the hostPort of pods on this node (what the CNI
// portmap plugin does for other plugins): connections to the node on
// hostIP:hostPort are DNATed to the pod. The agent keeps the table
// `inet weft-hostport` in line with the pods on its node.
package hostport

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"weft.dev/weft/internal/nftcomment"
)

// TableName is the agent's hostPort table.
const TableName = "weft-hostport"

// Mapping is one hostPort of one running pod.
type Mapping struct {
	HostIP        string // "" = every address of the node
	HostPort      int32
	Protocol      string // tcp, udp, sctp
	PodIP         string
	ContainerPort int32
	Pod           string // namespace/name, for the rule comment
}

// Mappings lists the hostPorts of pods that have an IP and run in their own
// network namespace (hostNetwork pods bind the port themselves).
func Mappings(pods []*corev1.Pod) []Mapping {
	var out []Mapping
	for _, p := range pods {
		if p.Spec.HostNetwork || p.Status.PodIP == "" || p.DeletionTimestamp != nil ||
			p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		ip := net.ParseIP(p.Status.PodIP)
		if ip == nil || ip.To4() == nil {
			continue // IPv4 only for now, like the rest of the datapath
		}
		for _, c := range p.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.HostPort == 0 {
					continue
				}
				hostIP := cp.HostIP
				if hostIP == "0.0.0.0" {
					hostIP = ""
				}
				proto := strings.ToLower(string(cp.Protocol))
				if proto == "" {
					proto = "tcp"
				}
				out = append(out, Mapping{HostIP: hostIP, HostPort: cp.HostPort, Protocol: proto, PodIP: ip.String(),
					ContainerPort: cp.ContainerPort, Pod: p.Namespace + "/" + p.Name})
			}
		}
	}
	// Specific host IPs before the wildcard, so both may share a port.
	sort.SliceStable(out, func(i, j int) bool {
		if (out[i].HostIP == "") != (out[j].HostIP == "") {
			return out[i].HostIP != ""
		}
		return fmt.Sprint(out[i]) < fmt.Sprint(out[j])
	})
	return out
}

// Build writes the whole table into tx.
func Build(tx *knftables.Transaction, ms []Mapping) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("weft agent: pod hostPorts")})
	tx.Flush(&knftables.Table{})
	tx.Add(&knftables.Set{Name: "hairpin", Type: "ipv4_addr . ipv4_addr"})
	tx.Flush(&knftables.Set{Name: "hairpin"})
	for _, c := range []struct {
		name string
		hook knftables.BaseChainHook
		prio knftables.BaseChainPriority
	}{{"prerouting", knftables.PreroutingHook, "-105"}, {"output", knftables.OutputHook, "-105"}, // before DNAT (-100)
		{"postrouting", knftables.PostroutingHook, "95"}} { // before SNAT (100)
		tx.Add(&knftables.Chain{Name: c.name, Type: knftables.PtrTo(knftables.NATType), Hook: knftables.PtrTo(c.hook), Priority: knftables.PtrTo(c.prio)})
	}
	tx.Add(&knftables.Chain{Name: "hostports"})
	tx.Add(&knftables.Rule{Chain: "prerouting", Rule: "jump hostports"})
	tx.Add(&knftables.Rule{Chain: "output", Rule: "jump hostports"})
	// A pod reaching its own hostPort, or a client on the node's loopback:
	// replies must come back through the node.
	tx.Add(&knftables.Rule{Chain: "postrouting", Rule: "ct status dnat ip saddr . ip daddr @hairpin masquerade"})
	tx.Add(&knftables.Rule{Chain: "postrouting", Rule: "ct status dnat ip saddr 127.0.0.0/8 masquerade"})
	seen := map[string]bool{}
	for _, m := range ms {
		match := "fib daddr type local"
		if m.HostIP != "" {
			match = "ip daddr " + m.HostIP
		}
		tx.Add(&knftables.Rule{Chain: "hostports", Rule: knftables.Concat(match, "meta l4proto", m.Protocol, "th dport", m.HostPort,
			"dnat ip to", net.JoinHostPort(m.PodIP, fmt.Sprint(m.ContainerPort))), Comment: nftcomment.Bounded(m.Pod)})
		if !seen[m.PodIP] {
			seen[m.PodIP] = true
			tx.Add(&knftables.Element{Set: "hairpin", Key: []string{m.PodIP, m.PodIP}})
		}
	}
}

// Controller keeps the table in line with the node's pods.
type Controller struct {
	client   kubernetes.Interface
	nodeName string
	nft      knftables.Interface
	log      *slog.Logger
}

// New returns a controller for nodeName writing through nft.
func New(client kubernetes.Interface, nodeName string, nft knftables.Interface, log *slog.Logger) *Controller {
	return &Controller{client: client, nodeName: nodeName, nft: nft, log: log}
}

// Run watches the node's pods and rewrites the table (small: one rule per
// hostPort) after each burst of changes, and every minute to repair drift.
func (c *Controller) Run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(c.client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", c.nodeName).String()
	}))
	pods := factory.Core().V1().Pods()
	changed := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if _, err := pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: poke,
		UpdateFunc: func(_, n any) { poke(n) }, DeleteFunc: poke}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), pods.Informer().HasSynced) {
		return ctx.Err()
	}
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	last := ""
	for {
		list, _ := pods.Lister().List(labels.Everything())
		ms := Mappings(list)
		tx := c.nft.NewTransaction()
		Build(tx, ms)
		if s := tx.String(); s != last {
			if err := c.nft.Run(ctx, tx); err != nil {
				c.log.Error("hostPort table", "err", err)
			} else {
				last = s
				c.log.Info("hostPorts programmed", "mappings", len(ms))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			time.Sleep(50 * time.Millisecond) // gather a burst
		case <-tick.C:
			last = "" // rewrite even if unchanged: repairs drift
		}
	}
}
