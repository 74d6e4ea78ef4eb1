package bgp

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Stale routes (weft's routes found in the kernel at start, from before a
// restart) stay until every session is up and has had this long to send
// its routes, or at most staleMax: a restarting agent keeps forwarding.
const (
	staleGrace = 5 * time.Second
	staleMax   = 90 * time.Second
)

// repairEvery: how often the kernel is checked for routes that went
// without us (a link down takes its routes with it).
const repairEvery = 5 * time.Second

// forgetMissing drops from have what the kernel no longer holds, so the
// next pass installs it again.
func forgetMissing(k KernelRoutes, have map[netip.Prefix]netip.Addr) {
	in, err := k.List()
	if err != nil {
		return
	}
	present := make(map[netip.Prefix]bool, len(in))
	for _, p := range in {
		present[p] = true
	}
	for p := range have {
		if !present[p] {
			delete(have, p)
		}
	}
}

// KernelRoutes is what a RouteTable needs of Kernel (a fake in tests).
type KernelRoutes interface {
	Replace(dst netip.Prefix, nexthop netip.Addr) error
	Delete(dst netip.Prefix) error
	List() ([]netip.Prefix, error)
}

// RouteTable turns GoBGP's best paths into kernel routes, one writer
// goroutine, repairing failed writes on the next pass.
type RouteTable struct {
	log   *slog.Logger
	dirty chan struct{}

	mu          sync.Mutex
	want        map[netip.Prefix]netip.Addr
	reserved    []netip.Prefix
	sessions    int
	established func() int

	seenRefused map[netip.Prefix]bool // refusals logged (run's goroutine only)

	installed prometheus.Gauge
	refused   prometheus.Counter
	writes    prometheus.Counter
}

// NewRouteTable makes a route table; Run applies it.
func NewRouteTable(log *slog.Logger, reg prometheus.Registerer) *RouteTable {
	t := &RouteTable{log: log, dirty: make(chan struct{}, 1), want: map[netip.Prefix]netip.Addr{}, seenRefused: map[netip.Prefix]bool{},
		installed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_bgp_routes_installed", Help: "Learned routes in the kernel."}),
		refused:   prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_bgp_routes_refused_total", Help: "Learned routes not installed (default routes, or over a network of this node)."}),
		writes:    prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_bgp_route_writes_total", Help: "Route adds, replaces and deletes."}),
	}
	if reg != nil {
		reg.MustRegister(t.installed, t.refused, t.writes)
	}
	return t
}

// Update takes best-path changes from GoBGP (the speaker's onRoutes).
func (t *RouteTable) Update(rs []Route) {
	t.mu.Lock()
	for _, r := range rs {
		if r.Nexthop.IsValid() {
			t.want[r.Prefix] = r.Nexthop
		} else {
			delete(t.want, r.Prefix)
		}
	}
	t.mu.Unlock()
	t.signal()
}

// SetReserved sets the networks no learned route may cover.
func (t *RouteTable) SetReserved(r []netip.Prefix) {
	t.mu.Lock()
	t.reserved = r
	t.mu.Unlock()
	t.signal()
}

// SetSessions says how many sessions there are and how to count those
// up, for the stale-route sweep after a restart.
func (t *RouteTable) SetSessions(n int, established func() int) {
	t.mu.Lock()
	t.sessions, t.established = n, established
	t.mu.Unlock()
}

func (t *RouteTable) signal() {
	select {
	case t.dirty <- struct{}{}:
	default:
	}
}

// Run applies the wanted routes until ctx ends; routes stay when it ends.
func (t *RouteTable) Run(ctx context.Context, k KernelRoutes) {
	have := map[netip.Prefix]netip.Addr{}
	stale, err := k.List()
	if err != nil {
		t.log.Warn("list weft routes", "err", err)
	}
	for _, p := range stale {
		have[p] = netip.Addr{} // next hop unknown: replaced when learned
	}
	start, allUpSince, checked := time.Now(), time.Time{}, time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.dirty:
		case <-tick.C:
		}
		if time.Since(checked) >= repairEvery {
			checked = time.Now()
			forgetMissing(k, have)
		}
		want, reserved, sessions, established := t.snapshot()
		if stale != nil {
			up := established != nil && established() >= sessions
			if !up {
				allUpSince = time.Time{}
			} else if allUpSince.IsZero() {
				allUpSince = time.Now()
			}
			if (up && time.Since(allUpSince) >= staleGrace) || time.Since(start) >= staleMax {
				t.log.Info("bgp resynced: stale routes from before the restart may go", "stale", len(stale))
				stale = nil
			}
		}
		t.apply(k, have, want, reserved, stale != nil)
	}
}

func (t *RouteTable) snapshot() (map[netip.Prefix]netip.Addr, []netip.Prefix, int, func() int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	want := make(map[netip.Prefix]netip.Addr, len(t.want))
	for p, nh := range t.want {
		want[p] = nh
	}
	return want, t.reserved, t.sessions, t.established
}

// apply makes the kernel hold want (minus what may not be installed);
// keepStale leaves routes of unknown next hop (from before a restart).
func (t *RouteTable) apply(k KernelRoutes, have, want map[netip.Prefix]netip.Addr, reserved []netip.Prefix, keepStale bool) {
	for p, nh := range want {
		if ok, why := Installable(p, reserved); !ok {
			if !t.seenRefused[p] {
				t.seenRefused[p] = true
				t.refused.Inc()
				t.log.Warn("learned route refused", "prefix", p, "nexthop", nh, "reason", why)
			}
			delete(want, p)
			continue
		}
		if cur, ok := have[p]; ok && cur == nh {
			continue
		}
		t.writes.Inc()
		if err := k.Replace(p, nh); err != nil {
			t.log.Warn("install learned route", "err", err)
			continue
		}
		have[p] = nh
	}
	for p, nh := range have {
		if _, ok := want[p]; ok || (keepStale && !nh.IsValid()) {
			continue
		}
		t.writes.Inc()
		if err := k.Delete(p); err != nil {
			t.log.Warn("remove route", "err", err)
			continue
		}
		delete(have, p)
	}
	t.installed.Set(float64(len(have)))
}
