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
	"slices"
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
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/knftables"

	"weft.dev/weft/internal/kubeclient"
	"weft.dev/weft/internal/nftcomment"
)

// TableName is the agent's hostPort table.
const TableName = "weft-hostport"

// Mapping is one hostPort of one running pod, in one address family.
type Mapping struct {
	HostIP        string // "" = every address of the node
	HostPort      int32
	Protocol      string // tcp, udp, sctp
	PodIP         string
	ContainerPort int32
	Pod           string // namespace/name, for the rule comment
	IPv6          bool
}

// Refusal is a hostPort of a pod that is not served, and why.
type Refusal struct {
	Pod    *corev1.Pod
	Reason string
}

// Mappings lists the hostPorts of pods that have an IP and run in their own
// network namespace (hostNetwork pods bind the port themselves), one per
// pod IP family. A hostIP that is not one of local (this node's addresses)
// is refused: it would never match, or would capture another host's
// address. Refusals are per pod; the other pods' mappings stand.
func Mappings(pods []*corev1.Pod, local []net.IP) ([]Mapping, []Refusal) {
	var out []Mapping
	var refused []Refusal
	for _, p := range pods {
		if p.Spec.HostNetwork || p.Status.PodIP == "" || p.DeletionTimestamp != nil ||
			p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		ms, reasons := podMappings(p, local)
		out = append(out, ms...)
		if len(reasons) > 0 {
			refused = append(refused, Refusal{Pod: p, Reason: strings.Join(reasons, "; ")})
		}
	}
	// Specific host IPs before the wildcard, so both may share a port.
	sort.SliceStable(out, func(i, j int) bool {
		if (out[i].HostIP == "") != (out[j].HostIP == "") {
			return out[i].HostIP != ""
		}
		return fmt.Sprint(out[i]) < fmt.Sprint(out[j])
	})
	return out, refused
}

func podIPs(p *corev1.Pod) []net.IP {
	var ips []net.IP
	for _, a := range p.Status.PodIPs {
		if ip := net.ParseIP(a.IP); ip != nil {
			ips = append(ips, ip)
		}
	}
	if len(ips) == 0 {
		if ip := net.ParseIP(p.Status.PodIP); ip != nil {
			ips = append(ips, ip)
		}
	}
	return ips
}

func podMappings(p *corev1.Pod, local []net.IP) ([]Mapping, []string) {
	var out []Mapping
	var reasons []string
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.HostPort == 0 {
				continue
			}
			var hostIP net.IP
			if cp.HostIP != "" {
				if hostIP = net.ParseIP(cp.HostIP); hostIP == nil {
					reasons = append(reasons, fmt.Sprintf("hostIP %q of hostPort %d is not an IP address", cp.HostIP, cp.HostPort))
					continue
				}
				if hostIP.IsUnspecified() {
					hostIP = nil
				} else if !slices.ContainsFunc(local, hostIP.Equal) {
					reasons = append(reasons, fmt.Sprintf("hostIP %s of hostPort %d is not an address of this node", hostIP, cp.HostPort))
					continue
				}
			}
			proto := strings.ToLower(string(cp.Protocol))
			if proto == "" {
				proto = "tcp"
			}
			for _, ip := range podIPs(p) {
				v6 := ip.To4() == nil
				if hostIP != nil && (hostIP.To4() == nil) != v6 {
					continue // a hostIP serves the pod IP of its own family
				}
				m := Mapping{HostPort: cp.HostPort, Protocol: proto, PodIP: ip.String(), ContainerPort: cp.ContainerPort,
					Pod: p.Namespace + "/" + p.Name, IPv6: v6}
				if hostIP != nil {
					m.HostIP = hostIP.String()
				}
				out = append(out, m)
			}
		}
	}
	return out, reasons
}

// Build writes the whole table into tx.
func Build(tx *knftables.Transaction, ms []Mapping) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("weft agent: pod hostPorts")})
	tx.Flush(&knftables.Table{})
	tx.Add(&knftables.Set{Name: "hairpin", Type: "ipv4_addr . ipv4_addr"})
	tx.Flush(&knftables.Set{Name: "hairpin"})
	tx.Add(&knftables.Set{Name: "hairpin6", Type: "ipv6_addr . ipv6_addr"})
	tx.Flush(&knftables.Set{Name: "hairpin6"})
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
	tx.Add(&knftables.Rule{Chain: "postrouting", Rule: "ct status dnat ip6 saddr . ip6 daddr @hairpin6 masquerade"})
	tx.Add(&knftables.Rule{Chain: "postrouting", Rule: "ct status dnat ip saddr 127.0.0.0/8 masquerade"})
	seen := map[string]bool{}
	for _, m := range ms {
		fam, set, to := "ip", "hairpin", net.JoinHostPort(m.PodIP, fmt.Sprint(m.ContainerPort))
		match := "meta nfproto ipv4 fib daddr type local"
		if m.IPv6 {
			// IPv6 has no route_localnet: ::1 cannot be DNATed to a pod.
			fam, set, match = "ip6", "hairpin6", "meta nfproto ipv6 ip6 daddr != ::1 fib daddr type local"
		}
		if m.HostIP != "" {
			match = fam + " daddr " + m.HostIP
		}
		tx.Add(&knftables.Rule{Chain: "hostports", Rule: knftables.Concat(match, "meta l4proto", m.Protocol, "th dport", m.HostPort,
			"dnat", fam, "to", to), Comment: nftcomment.Bounded(m.Pod)})
		if !seen[m.PodIP] {
			seen[m.PodIP] = true
			tx.Add(&knftables.Element{Set: set, Key: []string{m.PodIP, m.PodIP}})
		}
	}
}

// Controller keeps the table in line with the node's pods.
type Controller struct {
	client   kubernetes.Interface
	nodeName string
	nft      knftables.Interface
	log      *slog.Logger
	// Recorder, when set, reports refused hostPorts as Events on the pod.
	Recorder record.EventRecorder
	// LocalIPs lists the node's addresses (default: every interface's).
	LocalIPs func() []net.IP
	reported map[string]string // pod UID → refusal last reported
}

// New returns a controller for nodeName writing through nft.
func New(client kubernetes.Interface, nodeName string, nft knftables.Interface, log *slog.Logger) *Controller {
	return &Controller{client: client, nodeName: nodeName, nft: nft, log: log, LocalIPs: interfaceIPs, reported: map[string]string{}}
}

// Run watches the node's pods and rewrites the table (small: one rule per
// hostPort) after each burst of changes, and every minute to repair drift.
func (c *Controller) Run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(c.client, 0, informers.WithTransform(kubeclient.Slim), informers.WithTweakListOptions(func(o *metav1.ListOptions) {
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
		ms, refused := Mappings(list, c.LocalIPs())
		c.report(refused)
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

// report says once per change which pods' hostPorts are refused.
func (c *Controller) report(refused []Refusal) {
	now := map[string]string{}
	for _, r := range refused {
		uid := string(r.Pod.UID) + "/" + r.Pod.Namespace + "/" + r.Pod.Name
		now[uid] = r.Reason
		if c.reported[uid] == r.Reason {
			continue
		}
		c.log.Warn("hostPort refused", "pod", r.Pod.Namespace+"/"+r.Pod.Name, "reason", r.Reason)
		if c.Recorder != nil {
			c.Recorder.Event(r.Pod, corev1.EventTypeWarning, "HostPortRefused", r.Reason)
		}
	}
	c.reported = now
}

func interfaceIPs() []net.IP {
	addrs, _ := net.InterfaceAddrs()
	var out []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			out = append(out, n.IP)
		}
	}
	return out
}
