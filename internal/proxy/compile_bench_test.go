package proxy

import (
	"fmt"
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"
)

func benchPorts(n, eps int) []ServicePort {
	var sps []ServicePort
	for i := 0; i < n; i++ {
		sp := ServicePort{Namespace: "ns", Name: fmt.Sprintf("svc-%d", i), PortName: "http", Protocol: corev1.ProtocolTCP,
			ClusterIPs: []net.IP{net.IPv4(10, 96, byte(i/250), byte(i%250+1)).To4()}, Port: 80}
		for j := 0; j < eps; j++ {
			sp.Endpoints = append(sp.Endpoints, Endpoint{IP: net.IPv4(10, byte(200+i/6400), byte(i/25%256), byte(i%25*10+j+1)).To4(), Port: 8080, Ready: true, Serving: true})
		}
		sp.AllEndpoints = sp.Endpoints
		sps = append(sps, sp)
	}
	return sps
}

// BenchmarkCompileFull10k is the Go side of a full sync at 10k services x
// 10 endpoints: compile and render the transaction (nft itself not run).
func BenchmarkCompileFull10k(b *testing.B) {
	sps := benchPorts(10000, 10)
	cfg := Config{ClusterCIDRs: []*net.IPNet{mustCIDR("10.244.0.0/16")}, NodeName: "n"}
	for b.Loop() {
		tx := knftables.NewFake(knftables.InetFamily, TableName).NewTransaction()
		Compile(cfg, sps).Full(tx)
		_ = tx.String()
	}
}

// BenchmarkPartialOneChange10k is the Go side of a partial sync at 10k
// services: recompile the one changed service and diff its part.
func BenchmarkPartialOneChange10k(b *testing.B) {
	sps := benchPorts(10000, 10)
	cfg := Config{ClusterCIDRs: []*net.IPNet{mustCIDR("10.244.0.0/16")}, NodeName: "n"}
	st := newTableState(cfg)
	for _, sp := range sps {
		st.set(sp.Namespace+"/"+sp.Name, []ServicePort{sp})
	}
	one, fewer := sps[5], sps[5]
	fewer.Endpoints = fewer.Endpoints[:9]
	fewer.AllEndpoints = fewer.Endpoints
	key := one.Namespace + "/" + one.Name
	i := 0
	for b.Loop() {
		next := one
		if i%2 == 0 {
			next = fewer
		}
		i++
		oldPart, newPart, _, _ := st.update(map[string][]ServicePort{key: {next}})
		tx := knftables.NewFake(knftables.InetFamily, TableName).NewTransaction()
		if newPart.Diff(tx, oldPart) == 0 {
			b.Fatal("no change")
		}
		_ = tx.String()
	}
}

// BenchmarkStateFull10k is the Go side of the agent's full sync at 10k
// services: compile each service into the kept state, assemble, render.
func BenchmarkStateFull10k(b *testing.B) {
	sps := benchPorts(10000, 10)
	cfg := Config{ClusterCIDRs: []*net.IPNet{mustCIDR("10.244.0.0/16")}, NodeName: "n"}
	for b.Loop() {
		st := newTableState(cfg)
		for _, sp := range sps {
			st.set(sp.Namespace+"/"+sp.Name, []ServicePort{sp})
		}
		tx := knftables.NewFake(knftables.InetFamily, TableName).NewTransaction()
		st.ruleset().Full(tx)
		_ = tx.String()
	}
}
