package netpol

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// denials turns denied packets into log lines and metrics: one line per
// denied packet, at most one a second (burst 5) per local pod, the rest
// counted and said in the next line.
type denials struct {
	log     *slog.Logger
	counter *prometheus.CounterVec

	mu         sync.Mutex
	limiters   map[string]*rate.Limiter
	suppressed map[string]int
}

func newDenials(log *slog.Logger) *denials {
	return &denials{log: log, limiters: map[string]*rate.Limiter{}, suppressed: map[string]int{},
		counter: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_policy_denied_packets_total",
			Help: "Packets policy denied, by the namespace of the pod judged, direction, and the tier and policy that decided " +
				"(tier networkpolicy: no NetworkPolicy allowed it; admin or baseline: that ClusterNetworkPolicy's Deny rule). " +
				"The kernel reports at most 100 a second per deny chain and node; more are dropped uncounted."},
			[]string{"namespace", "direction", "tier", "policy"})}
}

// view is what the last table knew: pods by address and the policies
// that select this node's pods.
type view struct {
	pods   map[netip.Addr]string // namespace/name
	judged map[netip.Addr]judgedBy
}

func (d *denials) report(v view, p Denied) {
	local := p.Dst.Addr()
	if p.Direction == "egress" {
		local = p.Src.Addr()
	}
	pod := v.pods[local]
	j := v.judged[local]
	policies := j.ingress
	if p.Direction == "egress" {
		policies = j.egress
	}
	tier := p.Tier
	if tier == "" {
		tier = "networkpolicy"
	}
	d.counter.WithLabelValues(namespaceOf(pod), p.Direction, tier, p.Policy).Inc()
	d.mu.Lock()
	lim, ok := d.limiters[pod]
	if !ok {
		if len(d.limiters) > 10000 {
			d.limiters = map[string]*rate.Limiter{}
		}
		lim = rate.NewLimiter(1, 5)
		d.limiters[pod] = lim
	}
	allowed := lim.Allow()
	suppressed := d.suppressed[pod]
	if allowed {
		delete(d.suppressed, pod)
	} else {
		d.suppressed[pod]++
	}
	d.mu.Unlock()
	if !allowed {
		return
	}
	attrs := []any{"direction", p.Direction, "proto", p.Proto,
		"src", p.Src.String(), "dst", p.Dst.String(), "srcPod", v.pods[p.Src.Addr()], "dstPod", v.pods[p.Dst.Addr()]}
	if p.Tier != "" {
		d.log.Info("denied by ClusterNetworkPolicy", append(attrs, "tier", p.Tier, "policy", p.Policy, "suppressed", suppressed)...)
		return
	}
	d.log.Info("denied by NetworkPolicy", append(attrs, "tier", tier, "policies", policies, "suppressed", suppressed)...)
}

// readDenials reports denials until ctx ends, reopening the reader when
// it fails.
func (c *Controller) readDenials(ctx context.Context) {
	for ctx.Err() == nil {
		err := ReadDenials(ctx, func(p Denied) {
			c.mu.Lock()
			v := c.view
			c.mu.Unlock()
			c.denials.report(v, p)
		})
		if err != nil {
			c.log.Error("denial reports", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
	}
}
