package main

import (
	"fmt"
	"strconv"
	"strings"
)

// fastCounts is a node's weft_fastpath_packets_total by result (nil and
// err: not read).
type fastCounts struct {
	n   map[string]float64
	err error
}

// readFastCounts reads the fast path's counters from a node's agent.
func readFastCounts(node, ip string) fastCounts {
	out, err := labExec(node, "curl", "-sf", "http://"+ip+":9402/metrics")
	if err != nil {
		return fastCounts{err: fmt.Errorf("metrics of %s: %v %s", node, err, out)}
	}
	c := fastCounts{n: map[string]float64{}}
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(line, `weft_fastpath_packets_total{result="`)
		if !ok {
			continue
		}
		result, value, _ := strings.Cut(rest, `"} `)
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return fastCounts{err: fmt.Errorf("metrics of %s: %q: %v", node, line, err)}
		}
		c.n[result] = v
	}
	if len(c.n) == 0 {
		return fastCounts{err: fmt.Errorf("metrics of %s: no weft_fastpath_packets_total (fast path off?)", node)}
	}
	return c
}

// fastSummary says what the fast path did on both nodes between two
// readings: pod packets forwarded past the hooks, and those it left to the
// kernel's path, by reason.
func fastSummary(a, b string, before, after [2]fastCounts) string {
	var parts []string
	for i, node := range []string{a, b} {
		if err := before[i].err; err != nil {
			return "fast path counters: FAILED: " + err.Error()
		}
		if err := after[i].err; err != nil {
			return "fast path counters: FAILED: " + err.Error()
		}
		d := func(k string) float64 { return after[i].n[k] - before[i].n[k] }
		parts = append(parts, fmt.Sprintf("%s forwarded %.0f packets from its pod and %.0f to it (%.0f of them of flows conntrack tracks, allowed by the policies in force), left %.0f to conntrack, %.0f to policy, %.0f for want of a route",
			node, d("forwarded_egress"), d("forwarded_ingress"), d("forwarded_stamped"), d("passed_tracked"), d("passed_judged"), d("passed_route")))
	}
	return "fast path during the rounds: " + strings.Join(parts, "; ") + "."
}
