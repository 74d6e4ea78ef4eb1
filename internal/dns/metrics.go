package dns

import (
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the DNS server's Prometheus series. A nil *Metrics records
// nothing (tests, fuzzing).
type Metrics struct {
	requests  *prometheus.CounterVec
	responses *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	cacheOps  *prometheus.CounterVec
	fwdErrors *prometheus.CounterVec
	writeErrs *prometheus.CounterVec
	drops     *prometheus.CounterVec
	Records   prometheus.Gauge
	Syncs     prometheus.Counter
	bound     sync.Map // server → *boundMetrics
}

// boundMetrics holds a server's label children, resolved once: looking
// labels up per query would cost more than answering it.
type boundMetrics struct {
	requests  map[uint16]prometheus.Counter
	reqOther  prometheus.Counter
	responses map[int]prometheus.Counter
	respOther prometheus.Counter
	duration  prometheus.Observer
}

func (m *Metrics) forServer(server string) *boundMetrics {
	if b, ok := m.bound.Load(server); ok {
		return b.(*boundMetrics)
	}
	b := &boundMetrics{requests: map[uint16]prometheus.Counter{}, responses: map[int]prometheus.Counter{},
		reqOther: m.requests.WithLabelValues(server, "other"), respOther: m.responses.WithLabelValues(server, "other"),
		duration: m.duration.WithLabelValues(server)}
	for t, l := range typeLabels {
		b.requests[t] = m.requests.WithLabelValues(server, l)
	}
	for rc, l := range dns.RcodeToString {
		b.responses[rc] = m.responses.WithLabelValues(server, l)
	}
	actual, _ := m.bound.LoadOrStore(server, b)
	return actual.(*boundMetrics)
}

// NewMetrics registers the series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_dns_requests_total",
			Help: "DNS requests by server (cluster, node-local) and query type."}, []string{"server", "type"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_dns_responses_total",
			Help: "DNS responses by server and response code."}, []string{"server", "rcode"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "weft_dns_request_duration_seconds",
			Help:    "Time from request to response.",
			Buckets: []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 4}}, []string{"server"}),
		cacheOps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_dns_cache_lookups_total",
			Help: "Cache lookups of forwarded names: hit, miss, stale (served while the upstream failed). Hit ratio = hit / (hit + miss)."}, []string{"server", "result"}),
		fwdErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_dns_forward_errors_total",
			Help: "Forwarded queries no upstream answered."}, []string{"server"}),
		writeErrs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_dns_write_errors_total",
			Help: "Responses that could not be sent."}, []string{"server"}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_dns_dropped_total",
			Help: "Messages not answered: response (QR=1, never answered), rate-limit (client over its rate), busy (too many forwards pending)."}, []string{"server", "reason"}),
		Records: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_dns_names",
			Help: "Owner names in the current cluster snapshot."}),
		Syncs: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_dns_snapshot_builds_total",
			Help: "Snapshots built from API changes."}),
	}
	reg.MustRegister(m.requests, m.responses, m.duration, m.cacheOps, m.fwdErrors, m.writeErrs, m.drops, m.Records, m.Syncs)
	return m
}

var typeLabels = map[uint16]string{dns.TypeA: "A", dns.TypeAAAA: "AAAA", dns.TypeSRV: "SRV", dns.TypePTR: "PTR",
	dns.TypeCNAME: "CNAME", dns.TypeTXT: "TXT", dns.TypeSOA: "SOA", dns.TypeNS: "NS", dns.TypeANY: "ANY", dns.TypeMX: "MX"}

func (m *Metrics) observe(server string, req, resp *dns.Msg, d time.Duration) {
	if m == nil {
		return
	}
	qtype := uint16(0) // counted as other
	if len(req.Question) == 1 {
		qtype = req.Question[0].Qtype
	}
	m.observeAnswer(server, qtype, resp.Rcode, d)
}

// observeAnswer is observe for a response the UDP loop had packed.
func (m *Metrics) observeAnswer(server string, qtype uint16, rcode int, d time.Duration) {
	if m == nil {
		return
	}
	b := m.forServer(server)
	counter := b.reqOther
	if c, ok := b.requests[qtype]; ok {
		counter = c
	}
	counter.Inc()
	if c, ok := b.responses[rcode]; ok {
		c.Inc()
	} else {
		b.respOther.Inc()
	}
	b.duration.Observe(d.Seconds())
}

func (m *Metrics) cache(server, result string) {
	if m != nil {
		m.cacheOps.WithLabelValues(server, result).Inc()
	}
}

func (m *Metrics) forwardError(server string) {
	if m != nil {
		m.fwdErrors.WithLabelValues(server).Inc()
	}
}

func (m *Metrics) writeError(server string) {
	if m != nil {
		m.writeErrs.WithLabelValues(server).Inc()
	}
}

func (m *Metrics) dropped(server, reason string) {
	if m != nil {
		m.drops.WithLabelValues(server, reason).Inc()
	}
}
