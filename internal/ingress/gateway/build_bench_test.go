package gateway

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// BenchmarkBuild5000 compiles 5,000 HTTPRoutes on one Gateway's one
// listener, as the ingress bench propagates a route change at: routes
// made in bursts share their creation second.
func BenchmarkBuild5000(b *testing.B) { benchmarkBuild(b, nil) }

// BenchmarkBuild5000Memo is the proxy's part of a sync after one route
// changed: the others are in the memo.
func BenchmarkBuild5000Memo(b *testing.B) { benchmarkBuild(b, &Memo{}) }

func benchmarkBuild(b *testing.B, m *Memo) {
	in := testInput()
	in.Memo = m
	in.Gateways[0].Spec.Listeners = []gwv1.Listener{listener("http", 80, gwv1.HTTPProtocolType, "")}
	in.HTTPRoutes = nil
	for i := range 5000 {
		r := httpRoute("apps", fmt.Sprintf("g%05d", i), 0, "infra/gw", []string{fmt.Sprintf("h%05d.example.com", i)}, "", "web")
		r.CreationTimestamp = metav1.NewTime(time.Unix(int64(1000+i/100), 0))
		in.HTTPRoutes = append(in.HTTPRoutes, r)
	}
	in.ServicePortName = func(ns, name string, port int32) string { return "http" }
	b.ReportAllocs()
	for b.Loop() {
		if m == nil {
			Build(in)
		} else {
			BuildPorts(in) // what a change waits for
		}
	}
}

var ballast [][]byte

// BenchmarkBuild5000Scattered is BenchmarkBuild5000Memo with the routes
// decoded from JSON one by one between other allocations, as an
// informer's objects lie in a busy process's heap.
func BenchmarkBuild5000Scattered(b *testing.B) {
	in := testInput()
	in.Memo = &Memo{}
	in.Gateways[0].Spec.Listeners = []gwv1.Listener{listener("http", 80, gwv1.HTTPProtocolType, "")}
	in.HTTPRoutes = nil
	for i := range 5000 {
		r := httpRoute("apps", fmt.Sprintf("g%05d", i), 0, "infra/gw", []string{fmt.Sprintf("h%05d.example.com", i)}, "", "web")
		r.CreationTimestamp = metav1.NewTime(time.Unix(int64(1000+i/100), 0))
		raw, _ := json.Marshal(r)
		for range 20 {
			ballast = append(ballast, make([]byte, 512))
		}
		var d gwv1.HTTPRoute
		if err := json.Unmarshal(raw, &d); err != nil {
			b.Fatal(err)
		}
		in.HTTPRoutes = append(in.HTTPRoutes, &d)
	}
	rand.Shuffle(len(in.HTTPRoutes), func(i, j int) { in.HTTPRoutes[i], in.HTTPRoutes[j] = in.HTTPRoutes[j], in.HTTPRoutes[i] })
	in.ServicePortName = func(ns, name string, port int32) string { return "http" }
	b.ReportAllocs()
	for b.Loop() {
		BuildPorts(in) // what a change waits for
	}
}
