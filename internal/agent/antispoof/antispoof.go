// Package antispoof keeps pods and outside hosts from sending with
// addresses that are not theirs. Pods: a packet that comes in on a pod's
// host veth must carry a source address routed back through that same
// veth (every pod address has its own route to its veth), checked with a
// reverse-path fib lookup for IPv4 and IPv6 alike, so a pod can use only
// its own addresses and no per-pod state is needed: a new pod is covered
// from its first packet. VXLAN: frames are accepted only from nodes of
// the cluster, so no host on the underlay can inject packets into the
// overlay; frames between nodes skip conntrack (nothing NATs or filters
// them by state, and the packets inside them are tracked anyway), which
// saves a conntrack lookup per packet on each end of the tunnel.
package antispoof

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"
)

// TableName is the agent's anti-spoofing table.
const TableName = "weft-antispoof"

// Config says which interfaces are pods' and where VXLAN listens.
type Config struct {
	PodInterfaces string // name prefix of pods' host veths
	Tunnel        string // the VXLAN device (it may share the prefix)
	VXLANPort     int
	// VTEPAnnotation names the Node annotation with a node's VXLAN
	// source address when it differs from its InternalIP.
	VTEPAnnotation string
}

// Build writes the whole table into tx; nodes are the underlay addresses
// VXLAN frames may come from.
func Build(tx *knftables.Transaction, cfg Config, nodes []net.IP) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("weft agent: pods send only from their own addresses; VXLAN only from nodes, untracked")})
	tx.Flush(&knftables.Table{})
	tx.Add(&knftables.Set{Name: "nodes4", Type: "ipv4_addr"})
	tx.Add(&knftables.Set{Name: "nodes6", Type: "ipv6_addr"})
	tx.Add(&knftables.Chain{Name: "prerouting", Type: knftables.PtrTo(knftables.FilterType),
		Hook: knftables.PtrTo(knftables.PreroutingHook), Priority: knftables.PtrTo(knftables.RawPriority)})
	tx.Add(&knftables.Chain{Name: "from-pod"})
	pods := strconv.Quote(cfg.PodInterfaces + "*")
	if cfg.Tunnel != "" {
		tx.Add(&knftables.Rule{Chain: "prerouting", Rule: knftables.Concat("iifname", strconv.Quote(cfg.Tunnel), "return")})
	}
	tx.Add(&knftables.Rule{Chain: "prerouting", Rule: knftables.Concat("iifname", pods, "jump from-pod")})
	// Neighbour discovery and duplicate address detection use link-local
	// and unspecified sources.
	tx.Add(&knftables.Rule{Chain: "from-pod", Rule: "ip6 saddr { ::, fe80::/10 } return"})
	tx.Add(&knftables.Rule{Chain: "from-pod", Rule: "meta nfproto { ipv4, ipv6 } fib saddr . iif oif missing counter drop",
		Comment: knftables.PtrTo("source not routed back to this pod")})
	// VXLAN's checks sit behind one port match, so other packets pay one
	// rule for them.
	port := strconv.Itoa(cfg.VXLANPort)
	tx.Add(&knftables.Chain{Name: "vxlan-in"})
	tx.Add(&knftables.Rule{Chain: "prerouting", Rule: knftables.Concat("udp dport", port, "jump vxlan-in")})
	tx.Add(&knftables.Rule{Chain: "vxlan-in", Rule: "ip saddr != @nodes4 fib daddr type local counter drop",
		Comment: knftables.PtrTo("VXLAN from a host that is no node")})
	tx.Add(&knftables.Rule{Chain: "vxlan-in", Rule: "ip6 saddr != @nodes6 fib daddr type local counter drop",
		Comment: knftables.PtrTo("VXLAN from a host that is no node")})
	tx.Add(&knftables.Rule{Chain: "vxlan-in", Rule: "ip saddr @nodes4 notrack",
		Comment: knftables.PtrTo("VXLAN between nodes: no conntrack")})
	tx.Add(&knftables.Rule{Chain: "vxlan-in", Rule: "ip6 saddr @nodes6 notrack",
		Comment: knftables.PtrTo("VXLAN between nodes: no conntrack")})
	tx.Add(&knftables.Chain{Name: "output", Type: knftables.PtrTo(knftables.FilterType),
		Hook: knftables.PtrTo(knftables.OutputHook), Priority: knftables.PtrTo(knftables.RawPriority)})
	tx.Add(&knftables.Rule{Chain: "output", Rule: knftables.Concat("udp dport", port, "ip daddr @nodes4 notrack")})
	tx.Add(&knftables.Rule{Chain: "output", Rule: knftables.Concat("udp dport", port, "ip6 daddr @nodes6 notrack")})
	for _, ip := range nodes {
		set := "nodes4"
		if ip.To4() == nil {
			set = "nodes6"
		}
		tx.Add(&knftables.Element{Set: set, Key: []string{ip.String()}})
	}
}

// NodeAddresses lists where VXLAN frames of nodes come from: every node's
// InternalIPs and its published VTEP source address.
func NodeAddresses(nodes []*corev1.Node, vtepAnnotation string) []net.IP {
	seen := map[string]bool{}
	var out []net.IP
	add := func(ip net.IP) {
		if ip != nil && !seen[ip.String()] {
			seen[ip.String()] = true
			out = append(out, ip)
		}
	}
	for _, n := range nodes {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				add(net.ParseIP(a.Address))
			}
		}
		add(net.ParseIP(n.Annotations[vtepAnnotation]))
	}
	slices.SortFunc(out, func(a, b net.IP) int { return slices.Compare(a.To16(), b.To16()) })
	return out
}

// Controller keeps the table in line with the nodes.
type Controller struct {
	cfg   Config
	nft   knftables.Interface
	nodes listersv1.NodeLister
	log   *slog.Logger
	kick  chan struct{}
}

// New returns a controller; call Handler's result on the Node informer.
func New(cfg Config, nft knftables.Interface, nodes listersv1.NodeLister, log *slog.Logger) *Controller {
	return &Controller{cfg: cfg, nft: nft, nodes: nodes, log: log, kick: make(chan struct{}, 1)}
}

// Handler pokes the controller on node changes.
func (c *Controller) Handler() cache.ResourceEventHandler {
	poke := func(any) {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	return cache.ResourceEventHandlerFuncs{AddFunc: poke, UpdateFunc: func(_, o any) { poke(o) }, DeleteFunc: poke}
}

// Run writes the table when the node addresses change, and every minute
// to repair drift; the informer must be synced.
func (c *Controller) Run(ctx context.Context) error {
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	last := ""
	for {
		list, err := c.nodes.List(labels.Everything())
		if err == nil {
			addrs := NodeAddresses(list, c.cfg.VTEPAnnotation)
			if key := fmt.Sprint(addrs); key != last {
				tx := c.nft.NewTransaction()
				Build(tx, c.cfg, addrs)
				if err := c.nft.Run(ctx, tx); err != nil {
					c.log.Error("anti-spoofing table", "err", err)
				} else {
					last = key
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		case <-tick.C:
			last = ""
		}
	}
}
