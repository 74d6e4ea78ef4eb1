// Package nodedns is the node-local DNS cache of `weft agent`: a listener on
// a link-local address on every node (169.254.20.10 by default) that pods use
// as their nameserver. It answers from its cache and forwards misses to the
// cluster DNS over TCP, so pod DNS never goes through conntrack or NAT: no
// UDP conntrack races (the 5-second timeouts of parallel A/AAAA lookups) and
// no conntrack entries per query. When the cluster DNS is unreachable
// (restarting) it keeps answering names it has seen, stale.
package nodedns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"sigs.k8s.io/knftables"

	weftdns "weft.dev/weft/internal/dns"
)

// TableName is the table that exempts the listener from conntrack.
const TableName = "weft-node-dns"

// Config says where to listen and where the cluster DNS is.
type Config struct {
	Address    net.IP // link-local listener address, added to lo
	ClusterDNS string // host:port of the cluster DNS Service
	// Stale is how long past their TTL cached answers are still served when
	// the cluster DNS does not answer.
	Stale  time.Duration
	Limits weftdns.Limits
	// PodInterfaces is the name prefix of the host side of pod interfaces
	// and Tunnel the overlay device (which may share the prefix): queries
	// are answered only from this node itself and its own pods.
	PodInterfaces, Tunnel string
}

// Build describes the table: queries to the listener and its replies skip
// conntrack in both directions, and the listener answers only this node:
// its own processes (lo) and its pods (interfaces named podIfs*), never a
// packet from the underlay or the tunnel, even one routed here on purpose.
func Build(tx *knftables.Transaction, addr net.IP, podIfs, tunnel string) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("weft agent: node-local DNS bypasses conntrack and answers only this node")})
	for _, c := range []struct {
		name string
		hook knftables.BaseChainHook
		dir  string
	}{{"prerouting", knftables.PreroutingHook, "daddr"}, {"output", knftables.OutputHook, "saddr"}} {
		tx.Add(&knftables.Chain{Name: c.name, Type: knftables.PtrTo(knftables.FilterType),
			Hook: knftables.PtrTo(c.hook), Priority: knftables.PtrTo(knftables.RawPriority)})
		tx.Flush(&knftables.Chain{Name: c.name})
		port := "dport"
		if c.dir == "saddr" {
			port = "sport"
		}
		// One rule per hook: other packets fail its first comparison.
		tx.Add(&knftables.Rule{Chain: c.name, Rule: knftables.Concat("ip", c.dir, addr.String(), "meta l4proto { tcp, udp } th", port, "53", "notrack")})
	}
	tx.Add(&knftables.Chain{Name: "input", Type: knftables.PtrTo(knftables.FilterType),
		Hook: knftables.PtrTo(knftables.InputHook), Priority: knftables.PtrTo(knftables.FilterPriority)})
	tx.Flush(&knftables.Chain{Name: "input"})
	tx.Add(&knftables.Chain{Name: "guard"})
	tx.Flush(&knftables.Chain{Name: "guard"})
	tx.Add(&knftables.Rule{Chain: "input", Rule: knftables.Concat("ip daddr", addr.String(), "jump guard")})
	tx.Add(&knftables.Rule{Chain: "guard", Rule: `iifname "lo" accept`})
	if tunnel != "" {
		tx.Add(&knftables.Rule{Chain: "guard", Rule: knftables.Concat("iifname", strconv.Quote(tunnel), "drop")})
	}
	tx.Add(&knftables.Rule{Chain: "guard", Rule: knftables.Concat("iifname !=", strconv.Quote(podIfs+"*"), "drop")})
}

// Cache is a running node-local cache.
type Cache struct {
	cfg     Config
	log     *slog.Logger
	Handler *weftdns.Handler
}

// New returns a node-local cache; metrics may be nil.
func New(cfg Config, metrics *weftdns.Metrics, log *slog.Logger) *Cache {
	if cfg.Stale == 0 {
		cfg.Stale = time.Hour
	}
	h := &weftdns.Handler{Server: "node-local", Metrics: metrics,
		Forward: &weftdns.Forwarder{Upstreams: []string{cfg.ClusterDNS}, Timeout: 2 * time.Second, TCPOnly: true},
		Cache:   weftdns.NewCache(32<<20, cfg.Stale)}
	cfg.Limits.Apply(h)
	return &Cache{cfg: cfg, log: log, Handler: h}
}

// Run puts the address on lo, installs the notrack table and serves until
// ctx ends. The address and table stay when it stops: pods keep the
// nameserver across agent restarts and the next agent takes over.
func (c *Cache) Run(ctx context.Context) error {
	if err := EnsureAddress(c.cfg.Address); err != nil {
		return err
	}
	nft, err := knftables.New(knftables.InetFamily, TableName)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	tx := nft.NewTransaction()
	Build(tx, c.cfg.Address, c.cfg.PodInterfaces, c.cfg.Tunnel)
	if err := nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("node-local DNS notrack table: %w", err)
	}
	errc := make(chan error, 4)
	var stop func()
	// The agent may restart while the old listener's sockets linger; retry
	// briefly instead of failing the agent.
	for attempt := 0; ; attempt++ {
		var err error
		if stop, err = weftdns.Listen(net.JoinHostPort(c.cfg.Address.String(), "53"), c.Handler, errc); err == nil {
			break
		}
		if attempt == 20 {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
	defer stop()
	c.log.Info("node-local DNS cache serving", "address", c.cfg.Address, "cluster-dns", c.cfg.ClusterDNS)
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// EnsureAddress adds addr/32 to lo (this kernel has no dummy links; lo
// accepts local addresses and the host routes them to itself).
func EnsureAddress(addr net.IP) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	// Host scope, like 127.0.0.1: the kernel never picks it as the source of
	// traffic leaving the node (with global scope, node → pod connections
	// would come from 169.254.20.10), yet sockets bound to it answer pods.
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr, Mask: net.CIDRMask(32, 32)}, Scope: int(netlink.SCOPE_HOST)}
	if err := netlink.AddrAdd(lo, a); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("address %s on lo: %w", addr, err)
	}
	return nil
}
