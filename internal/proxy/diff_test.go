package proxy

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

func genPorts(n int, affinityEvery int) []ServicePort {
	var ports []ServicePort
	for i := 0; i < n; i++ {
		sp := ServicePort{Namespace: "ns", Name: fmt.Sprintf("s%03d", i), Protocol: "TCP", Port: 80,
			ClusterIPs: []net.IP{net.IPv4(10, 96, 0, byte(i)).To4()}}
		if i%3 == 0 {
			sp.NodePort = int32(30000 + i)
		}
		if affinityEvery > 0 && i%affinityEvery == 0 {
			sp.AffinitySeconds = 100
		}
		for e := 0; e < 3; e++ {
			sp.Endpoints = append(sp.Endpoints, Endpoint{IP: net.IPv4(10, 244, byte(e), byte(i)).To4(), Port: 8080, Ready: true, NodeName: "n1"})
		}
		sp.AllEndpoints = sp.Endpoints
		ports = append(ports, sp)
	}
	return ports
}

// Writing A whole and then the diff to B must leave exactly what writing
// B whole leaves.
func TestDiffEqualsFull(t *testing.T) {
	cfg := Config{NodeName: "n1", ClusterCIDRs: []*net.IPNet{mustCIDR("10.244.0.0/16")}}
	a := genPorts(20, 4)
	b := genPorts(20, 4)
	b = b[1:]                           // a service removed
	b[0].Endpoints = b[0].Endpoints[1:] // endpoints changed
	b[0].AllEndpoints = b[0].Endpoints
	b[5].Endpoints = nil // lost all endpoints: now rejected
	b[5].AllEndpoints = nil
	b = append(b, genPorts(25, 4)[20:]...) // services added
	b[7].AffinitySeconds = 0               // affinity switched off

	incremental := knftables.NewFake(knftables.InetFamily, TableName)
	tx := incremental.NewTransaction()
	ma := Compile(cfg, a)
	ma.Full(tx)
	if err := incremental.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	tx = incremental.NewTransaction()
	mb := Compile(cfg, b)
	ops := mb.Diff(tx, ma)
	if err := incremental.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	whole := knftables.NewFake(knftables.InetFamily, TableName)
	tx = whole.NewTransaction()
	mb.Full(tx)
	if err := whole.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	// The Fake dumps in insertion order; compare content.
	if sortedLines(incremental.Dump()) != sortedLines(whole.Dump()) {
		t.Fatalf("diff result differs from a full write:\n--- incremental\n%s\n--- full\n%s", incremental.Dump(), whole.Dump())
	}
	// Nothing changed: nothing to do.
	if n := mb.Diff(incremental.NewTransaction(), Compile(cfg, b)); n != 0 {
		t.Fatalf("diff of identical rulesets has %d operations", n)
	}
	t.Logf("diff took %d operations", ops)
}

// One changed service among many touches only that service: its map
// elements (service IP and node port entries, endpoint buckets), nothing
// of the 199 others.
func TestDiffOneChangeIsSmall(t *testing.T) {
	cfg := Config{NodeName: "n1", ClusterCIDRs: []*net.IPNet{mustCIDR("10.244.0.0/16")}}
	for _, idx := range []int{100, 99} { // without and with a node port
		a := genPorts(200, 0)
		b := genPorts(200, 0)
		// Some other service already has 2 endpoints, so the shared
		// 2-endpoint chains exist before and after.
		for _, ports := range [][]ServicePort{a, b} {
			ports[0].Endpoints = ports[0].Endpoints[:2]
			ports[0].AllEndpoints = ports[0].Endpoints
		}
		removed := b[idx].Endpoints[2].IP.String()
		b[idx].Endpoints = b[idx].Endpoints[:2]
		b[idx].AllEndpoints = b[idx].Endpoints
		tx := knftables.NewFake(knftables.InetFamily, TableName).NewTransaction()
		n := Compile(cfg, b).Diff(tx, Compile(cfg, a))
		// Entry points re-pointed to the 2-endpoint chain (delete + add
		// each) and the third bucket deleted, per entry point; the removed
		// pod's hairpin entry.
		entries := 1
		if b[idx].NodePort > 0 {
			entries = 2
		}
		if n > 3*entries+1 {
			t.Errorf("service %d: one endpoint removed took %d operations:\n%s", idx, n, tx)
		}
		mark := []string{b[idx].ClusterIPs[0].String(), fmt.Sprintf("tcp . %d ", b[idx].NodePort)}
		for _, line := range strings.Split(strings.TrimSpace(tx.String()), "\n") {
			if !strings.Contains(line, mark[0]) && (b[idx].NodePort == 0 || !strings.Contains(line, mark[1])) &&
				!strings.Contains(line, "hairpin-pairs { "+removed+" . "+removed+" }") {
				t.Errorf("service %d: the diff touches something else: %s", idx, line)
			}
		}
	}
}

func sortedLines(s string) string {
	lines := strings.Split(s, "\n")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// A partial sync (recompiling only the changed services of a kept state)
// must leave exactly what writing the final services whole leaves,
// including shared-set elements several services use and shared chains
// first needed by the change.
func TestPartialUpdateEqualsFull(t *testing.T) {
	cfg := Config{NodeName: "n1", ClusterCIDRs: []*net.IPNet{mustCIDR("10.244.0.0/16")}}
	byKey := func(ports []ServicePort) map[string][]ServicePort {
		m := map[string][]ServicePort{}
		for _, sp := range ports {
			k := sp.Namespace + "/" + sp.Name
			m[k] = append(m[k], sp)
		}
		return m
	}
	a := genPorts(20, 4)
	// s001 and s002 share a local endpoint (one pod behind two services):
	// its hairpin entry must stay while either uses it.
	a[2].Endpoints = append([]Endpoint{a[1].Endpoints[0]}, a[2].Endpoints...)
	a[2].AllEndpoints = a[2].Endpoints
	b := genPorts(25, 4)[1:] // s000 removed, s020..s024 added
	b[0].Endpoints = nil     // s001 lost all endpoints: rejected, hairpin entry still used by s002
	b[0].AllEndpoints = nil
	b[1] = a[2]               // s002 unchanged
	b[5].AffinitySeconds = 0  // affinity switched off (s006)
	for e := 3; e < 12; e++ { // s009 grows to 12 endpoints: new shared chains and bucket maps
		b[8].Endpoints = append(b[8].Endpoints, Endpoint{IP: net.IPv4(10, 244, byte(e), 9).To4(), Port: 8080, Ready: true})
	}
	b[8].AllEndpoints = b[8].Endpoints

	st := newTableState(cfg)
	for k, ports := range byKey(a) {
		st.set(k, ports)
	}
	incremental := knftables.NewFake(knftables.InetFamily, TableName)
	tx := incremental.NewTransaction()
	st.ruleset().Full(tx)
	if err := incremental.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	// Only what differs is handed over, as the informers would.
	before, after := byKey(a), byKey(b)
	changed := map[string][]ServicePort{}
	for k := range before {
		if !reflect.DeepEqual(before[k], after[k]) {
			changed[k] = after[k]
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			changed[k] = after[k]
		}
	}
	if _, ok := changed["ns/s002"]; ok || changed["ns/s001"] == nil {
		t.Fatalf("the scenario lost its point: changed %v", sortedKeys(changed))
	}
	oldPart, newPart, _, _ := st.update(changed)
	tx = incremental.NewTransaction()
	newPart.Diff(tx, oldPart)
	if err := incremental.Run(context.Background(), tx); err != nil {
		t.Fatalf("%v\n%s", err, tx)
	}
	whole := knftables.NewFake(knftables.InetFamily, TableName)
	tx = whole.NewTransaction()
	Compile(cfg, b).Full(tx)
	if err := whole.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	if sortedLines(incremental.Dump()) != sortedLines(whole.Dump()) {
		t.Fatalf("partial update differs from a full write:\n--- partial\n%s\n--- full\n%s", incremental.Dump(), whole.Dump())
	}
	if !strings.Contains(whole.Dump(), "hairpin-pairs { 10.244.0.1 . 10.244.0.1 }") || !strings.Contains(whole.Dump(), "pick-ip-11") {
		t.Fatalf("the scenario lost its point:\n%s", whole.Dump())
	}
	// The state now equals one built from scratch.
	if got, want := sortedLines(ruleDump(t, st.ruleset())), sortedLines(ruleDump(t, Compile(cfg, b))); got != want {
		t.Fatalf("kept state differs from a fresh compile:\n--- kept\n%s\n--- fresh\n%s", got, want)
	}
}

func ruleDump(t *testing.T, m *Ruleset) string {
	f := knftables.NewFake(knftables.InetFamily, TableName)
	tx := f.NewTransaction()
	m.Full(tx)
	if err := f.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	return f.Dump()
}
