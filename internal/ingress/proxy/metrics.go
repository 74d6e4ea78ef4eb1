package proxy

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are per Ingress (the route's source, "default" for the default
// backend, "none" when nothing matched), so their number follows the
// Ingresses, never the requests.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	upstream *prometheus.CounterVec
	// byRoute caches each source's series (a *routeSeries): finding them
	// in the vectors hashes the label values on every request.
	byRoute sync.Map
}

type routeSeries struct {
	duration prometheus.Observer
	codes    sync.Map // status code → prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_ingress_requests_total",
			Help: "Requests answered, by Ingress and status code."}, []string{"ingress", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "weft_ingress_request_duration_seconds",
			Help: "Time from a request's arrival to its response's end, by Ingress.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)},
			[]string{"ingress"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_ingress_upstream_errors_total",
			Help: "Failed attempts to reach an endpoint, by Ingress and reason (refused: moved on to another endpoint)."}, []string{"ingress", "reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.upstream)
	}
	return m
}

func (m *metrics) observe(ingress string, code int, seconds float64) {
	v, ok := m.byRoute.Load(ingress)
	if !ok {
		v, _ = m.byRoute.LoadOrStore(ingress, &routeSeries{duration: m.duration.WithLabelValues(ingress)})
	}
	rs := v.(*routeSeries)
	c, ok := rs.codes.Load(code)
	if !ok {
		c, _ = rs.codes.LoadOrStore(code, m.requests.WithLabelValues(ingress, strconv.Itoa(code)))
	}
	c.(prometheus.Counter).Inc()
	rs.duration.Observe(seconds)
}
