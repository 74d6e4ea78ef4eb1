package fastpath

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"weft.dev/weft/internal/netlinkdump"
)

// Config is what the controller needs of the node.
type Config struct {
	Datapath *Datapath
	// PodPrefix names the host sides of pod veths (weft-cni's).
	PodPrefix string
	// Uplinks name the devices other nodes' pod traffic arrives on
	// besides the underlay link (the VXLAN device).
	Uplinks []string
	// Tunnel names the VXLAN device (one of Uplinks) whose frames the
	// programs build and unwrap themselves; "" leaves VXLAN to the kernel.
	Tunnel string
	// Underlay is the ifindex of the link holding the node's address.
	Underlay int
	// Policy says that a policy controller will report judgements: until
	// its first report every endpoint counts as judged both ways.
	Policy   bool
	Resync   time.Duration
	Log      *slog.Logger
	Registry prometheus.Registerer
}

// Judged is whether policies select a local pod address per direction.
type Judged struct{ Ingress, Egress bool }

// Controller attaches the programs to the node's pod veths and uplinks
// and keeps the endpoints map to the node's pod routes and policies.
type Controller struct {
	cfg    Config
	kick   chan struct{}
	mu     sync.Mutex
	judged map[netip.Addr]Judged // nil: no report yet
	gen    uint32                // the policy table's generation (SetGeneration)
}

// New wires a controller; Run does the work.
func New(cfg Config) *Controller {
	if cfg.Resync == 0 {
		cfg.Resync = 30 * time.Second
	}
	c := &Controller{cfg: cfg, kick: make(chan struct{}, 1)}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(statsCollector{cfg.Datapath})
	}
	return c
}

// SetUnderlay names the link holding the node's address (before Run).
func (c *Controller) SetUnderlay(ifindex int) { c.cfg.Underlay = ifindex }

// SetJudged takes the policy controller's latest report.
func (c *Controller) SetJudged(j map[netip.Addr]Judged) {
	c.mu.Lock()
	c.judged = j
	c.mu.Unlock()
	c.trigger()
}

// SetGeneration takes the generation of the policy table in force: flows
// stamped with it may be carried (Stamp). The policy controller sets 0
// before it writes a table and the new generation after, so no flow is
// carried on a verdict older than the table.
func (c *Controller) SetGeneration(gen uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen = gen
	if err := c.writeStamp(); err != nil {
		c.cfg.Log.Warn("fast path: writing the policy generation failed; tracked flows take the kernel's path", "err", err)
	}
}

// writeStamp writes the generation with the node's conntrack timeouts
// (read each time: the service proxy sets them after its first sync).
// c.mu is held.
func (c *Controller) writeStamp() error {
	return c.cfg.Datapath.SetStamp(StampOf(c.gen, readConntrackSysctl))
}

// conntrackSysctls is where the node's conntrack settings are.
const conntrackSysctls = "/proc/sys/net/netfilter/"

func readConntrackSysctl(name string) (string, error) {
	b, err := os.ReadFile(conntrackSysctls + name)
	return strings.TrimSpace(string(b)), err
}

// StampOf is what may be carried at generation gen, given the node's
// conntrack settings (read by name): TCP only while conntrack is liberal
// (bpf/fastpath.c, stamped), each protocol with the timeout conntrack
// itself gives an established flow of it.
func StampOf(gen uint32, read func(name string) (string, error)) Stamp {
	if gen == 0 {
		return Stamp{}
	}
	seconds := func(name string) time.Duration {
		v, err := read(name)
		if err != nil {
			return 0
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	s := Stamp{Gen: gen, UDPTimeout: seconds("nf_conntrack_udp_timeout_stream")}
	if v, err := read("nf_conntrack_tcp_be_liberal"); err == nil && v == "1" {
		s.TCPTimeout = seconds("nf_conntrack_tcp_timeout_established")
	}
	return s
}

func (c *Controller) trigger() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run follows link, route and VXLAN forwarding entry changes until ctx
// ends, then detaches.
func (c *Controller) Run(ctx context.Context) error {
	defer c.cfg.Datapath.Close()
	done := make(chan struct{})
	defer close(done)
	ev := events{links: make(chan netlink.LinkUpdate, 64), routes: make(chan netlink.RouteUpdate, 256),
		neighs: make(chan netlink.NeighUpdate, 256), kick: c.kick, log: c.cfg.Log}
	if err := netlink.LinkSubscribe(ev.links, done); err != nil {
		return err
	}
	if err := netlink.RouteSubscribe(ev.routes, done); err != nil {
		return err
	}
	if err := netlink.NeighSubscribe(ev.neighs, done); err != nil {
		return err
	}
	ev.tick = time.NewTicker(c.cfg.Resync)
	defer ev.tick.Stop()
	for {
		if err := c.Sync(); err != nil {
			c.cfg.Log.Warn("fast path sync failed; pod traffic keeps the kernel's path where the programs do not know it", "err", err)
		}
		if !ev.wait(ctx) {
			return nil
		}
		// Events come in bursts (a pod's veth, address and route).
		time.Sleep(20 * time.Millisecond)
		drain(ev.links)
		drain(ev.routes)
		drain(ev.neighs)
	}
}

// events are what makes the controller sync.
type events struct {
	links  chan netlink.LinkUpdate
	routes chan netlink.RouteUpdate
	neighs chan netlink.NeighUpdate
	kick   chan struct{}
	tick   *time.Ticker
	log    *slog.Logger
}

// wait returns true at the next change worth a sync: any link or route,
// a forwarding entry (not the node's ARP churn), a kick, the resync tick;
// false when ctx ends. A subscription that fails (its channel closed) is
// dropped and logged; the resync tick still catches its changes.
func (e *events) wait(ctx context.Context) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case _, ok := <-e.links:
			if !ok {
				e.links = lost[netlink.LinkUpdate](e.log, "link")
			}
			return true
		case _, ok := <-e.routes:
			if !ok {
				e.routes = lost[netlink.RouteUpdate](e.log, "route")
			}
			return true
		case u, ok := <-e.neighs:
			if !ok {
				e.neighs = lost[netlink.NeighUpdate](e.log, "neighbour")
				return true
			}
			if u.Family == unix.AF_BRIDGE {
				return true
			}
		case <-e.kick:
			return true
		case <-e.tick.C:
			return true
		}
	}
}

// lost logs a subscription's end; receiving from its nil channel blocks.
func lost[T any](log *slog.Logger, what string) chan T {
	log.Warn("fast path: netlink " + what + " subscription ended; changes are picked up by the periodic resync")
	return nil
}

func drain[T any](ch chan T) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// Sync attaches to every pod veth and uplink, detaches from devices gone
// and writes the endpoints.
func (c *Controller) Sync() error {
	ls, err := netlink.LinkList()
	if err != nil {
		return err
	}
	var devs []Device
	for _, l := range ls {
		a := l.Attrs()
		devs = append(devs, Device{Index: a.Index, Name: a.Name, Veth: l.Type() == "veth"})
	}
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return err
	}
	var routes []Route
	for _, r := range rs {
		if r.Dst != nil {
			if p, ok := netip.AddrFromSlice(r.Dst.IP); ok {
				ones, _ := r.Dst.Mask.Size()
				routes = append(routes, Route{Dst: netip.PrefixFrom(p.Unmap(), ones), LinkIndex: r.LinkIndex})
			}
		}
	}
	c.mu.Lock()
	judged := c.judged
	err = c.writeStamp()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if !c.cfg.Policy {
		judged = nil
	}
	p := c.plan(devs, routes, judged)
	d := c.cfg.Datapath
	if err := d.SetTunnel(c.tunnel(ls)); err != nil {
		return err
	}
	for _, i := range p.Pods {
		if err := d.AttachPod(i); err != nil {
			return err
		}
	}
	for _, i := range p.Uplinks {
		if err := d.AttachUplink(i); err != nil {
			return err
		}
	}
	for _, i := range d.attached() {
		if !p.keep[i] {
			d.Detach(i)
		}
	}
	return d.SetEndpoints(p.Endpoints)
}

// tunnel reads the VXLAN device and its forwarding entries; the zero
// Tunnel when there is none or it is not IPv4.
func (c *Controller) tunnel(ls []netlink.Link) Tunnel {
	for _, l := range ls {
		v, ok := l.(*netlink.Vxlan)
		if !ok || c.cfg.Tunnel == "" || v.Name != c.cfg.Tunnel || v.SrcAddr.To4() == nil {
			continue
		}
		local, _ := netip.AddrFromSlice(v.SrcAddr.To4())
		t := Tunnel{IfIndex: v.Index, Underlay: v.VtepDevIndex, Local: local, VNI: uint32(v.VxlanId), Port: uint16(v.Port),
			Peers: map[[6]byte]netip.Addr{}}
		if t.Underlay == 0 {
			t.Underlay = c.cfg.Underlay
		}
		fdb, err := netlinkdump.Retry(func() ([]netlink.Neigh, error) { return netlink.NeighList(v.Index, unix.AF_BRIDGE) })
		if err != nil {
			c.cfg.Log.Warn("fast path: reading the VXLAN forwarding entries; VXLAN stays with the kernel's device", "err", err)
			return Tunnel{}
		}
		for _, n := range fdb {
			a, ok := netip.AddrFromSlice(n.IP.To4())
			if ok && len(n.HardwareAddr) == 6 && !slices.Equal(n.HardwareAddr, make([]byte, 6)) {
				t.Peers[[6]byte(n.HardwareAddr)] = a
			}
		}
		return t
	}
	return Tunnel{}
}

// Device and Route are what planning reads of the node's links and routes.
type Device struct {
	Index int
	Name  string
	Veth  bool
}

type Route struct {
	Dst       netip.Prefix
	LinkIndex int
}

// Plan is the programs' devices and the endpoints map for a node.
type Plan struct {
	Pods, Uplinks []int
	Endpoints     map[netip.Addr]Endpoint
	keep          map[int]bool
}

// plan: from_pod on every pod veth, to_pod on the uplinks; an endpoint
// per /32 route via a pod veth, judged both ways while policy has not
// reported it (a pod a policy selects is never open before its first
// packet's verdict is in the kernel).
func (c *Controller) plan(devs []Device, routes []Route, judged map[netip.Addr]Judged) Plan {
	p := Plan{Endpoints: map[netip.Addr]Endpoint{}, keep: map[int]bool{}}
	pod := map[int]bool{}
	for _, d := range devs {
		switch {
		case d.Veth && strings.HasPrefix(d.Name, c.cfg.PodPrefix):
			pod[d.Index] = true
			p.Pods = append(p.Pods, d.Index)
		case d.Index == c.cfg.Underlay || slices.Contains(c.cfg.Uplinks, d.Name):
			p.Uplinks = append(p.Uplinks, d.Index)
		default:
			continue
		}
		p.keep[d.Index] = true
	}
	for _, r := range routes {
		if !pod[r.LinkIndex] || r.Dst.Bits() != r.Dst.Addr().BitLen() {
			continue
		}
		ep := Endpoint{IfIndex: uint32(r.LinkIndex), Judged: c.cfg.Policy}
		if j, ok := judged[r.Dst.Addr()]; ok && c.cfg.Policy {
			ep.Judged = j.Ingress || j.Egress
		}
		p.Endpoints[r.Dst.Addr()] = ep
	}
	return p
}

// statsCollector exports the programs' counters.
type statsCollector struct{ d *Datapath }

var statsDesc = prometheus.NewDesc("weft_fastpath_packets_total",
	"Pod packets the fast path saw, by result: forwarded past the node's netfilter hooks, or passed to the kernel's path and why.",
	[]string{"result"}, nil)

func (s statsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- statsDesc }

func (s statsCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := s.d.Stats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(statsDesc, err)
		return
	}
	for i, n := range st {
		ch <- prometheus.MustNewConstMetric(statsDesc, prometheus.CounterValue, float64(n), StatNames[i])
	}
}
