package proxy

import (
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

// When the kernel refuses one service's rules, isolate names exactly that
// service (checking halves with nft --check, nothing applied), and the
// table without it loads: every other service keeps working.
func TestPrivilegedIsolateRefusedService(t *testing.T) {
	tp := newTopo(t)
	serve(t, tp.server, "10.244.1.2:8080")
	h := startProxy(t, tp)
	cfg := h.p.cfg
	st := newTableState(cfg)
	all := map[string][]ServicePort{}
	for i, name := range []string{"a", "b", "c", "d", "e"} {
		ip := net.IPv4(10, 96, 0, byte(80+i)).To4()
		all["default/"+name] = []ServicePort{{Namespace: "default", Name: name, Protocol: "TCP", Port: 80, ClusterIPs: []net.IP{ip},
			Endpoints: []Endpoint{{IP: net.ParseIP("10.244.1.2").To4(), Port: 8080, Ready: true}}}}
	}
	all["default/c"][0].AffinitySeconds = 60 // so it has chains of its own
	// An address nft will not take (a 5-byte IP prints as "?0a..."), in
	// c's own chains and map elements.
	all["default/c"][0].ExternalIPs = []net.IP{{10, 0, 0, 1, 2}}
	st.setAll(all)
	var bad map[string]string
	err := tp.node.Do(func(ns.NetNS) error {
		if err := h.p.writeWhole(h.ctx, st.ruleset()); err == nil {
			t.Error("the broken table loaded: the test lost its point")
		}
		bad = h.p.isolate(h.ctx, st)
		for key := range bad {
			st.set(key, nil)
		}
		return h.p.writeWhole(h.ctx, st.ruleset())
	})
	if err != nil {
		t.Fatalf("the table without the refused service: %v", err)
	}
	if len(bad) != 1 || !strings.Contains(bad["default/c"], "syntax error") {
		t.Fatalf("isolated %v, want only default/c", bad)
	}
	for _, addr := range []string{"10.96.0.80:80", "10.96.0.81:80", "10.96.0.83:80", "10.96.0.84:80"} {
		if _, err := dial(tp.client, addr); err != nil {
			t.Errorf("%s after skipping another service: %v", addr, err)
		}
	}
}
