package proxy

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/knftables"
)

// Two Services asking for the same external address and port: the older
// holds it on every node whatever the order they arrive in, the other is
// told, and deleting either leaves the address with the one that stays,
// through partial syncs exactly as through a full one.
func TestExternalAddressClash(t *testing.T) {
	cfg := Config{ClusterCIDRs: []*net.IPNet{mustCIDR("10.244.0.0/16")}, NodeName: "n1"}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(name, clusterIP string, created time.Time) ServicePort {
		return ServicePort{Namespace: "ns", Name: name, Protocol: "TCP", Port: 80, Created: created,
			ClusterIPs: []net.IP{net.ParseIP(clusterIP).To4()}, ExternalIPs: []net.IP{net.ParseIP("203.0.113.7").To4()},
			Endpoints: []Endpoint{{IP: net.ParseIP("10.244.1." + clusterIP[len(clusterIP)-1:]).To4(), Port: 8080, Ready: true}}}
	}
	older, newer := mk("zeta", "10.96.0.1", t0), mk("alpha", "10.96.0.2", t0.Add(time.Hour))
	// Which endpoint the address leads to says who holds it (zeta's is
	// 10.244.1.1, alpha's 10.244.1.2).
	holder := func(f *knftables.Fake) string {
		for _, line := range strings.Split(f.Dump(), "\n") {
			if strings.Contains(line, "203.0.113.7 . tcp . 80 :") {
				switch {
				case strings.Contains(line, ": 10.244.1.1 "):
					return "zeta"
				case strings.Contains(line, ": 10.244.1.2 "):
					return "alpha"
				}
				return line
			}
		}
		return ""
	}
	st := newTableState(cfg)
	st.set("ns/alpha", []ServicePort{newer}) // the newer one first
	st.set("ns/zeta", []ServicePort{older})
	f := knftables.NewFake(knftables.InetFamily, TableName)
	tx := f.NewTransaction()
	st.ruleset().Full(tx)
	if err := f.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	if h := holder(f); h != "zeta" {
		t.Fatalf("203.0.113.7:80 held by %q, want the older Service zeta", h)
	}
	if c := st.conflicts["ns/alpha"]; !strings.Contains(c, "203.0.113.7:80/TCP is held by ns/zeta") || st.conflicts["ns/zeta"] != "" {
		t.Fatalf("conflicts %v", st.conflicts)
	}
	step := func(name string, changed map[string][]ServicePort, want string, all ...ServicePort) {
		t.Helper()
		oldPart, newPart, _, _ := st.update(changed)
		tx := f.NewTransaction()
		newPart.Diff(tx, oldPart)
		if err := f.Run(context.Background(), tx); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if h := holder(f); h != want {
			t.Fatalf("%s: held by %q, want %q", name, h, want)
		}
		whole := knftables.NewFake(knftables.InetFamily, TableName)
		tx = whole.NewTransaction()
		Compile(cfg, all).Full(tx)
		if err := whole.Run(context.Background(), tx); err != nil {
			t.Fatal(err)
		}
		if sortedLines(f.Dump()) != sortedLines(whole.Dump()) {
			t.Fatalf("%s: partial sync differs from a full write:\n--- partial\n%s\n--- full\n%s", name, f.Dump(), whole.Dump())
		}
	}
	step("holder deleted", map[string][]ServicePort{"ns/zeta": nil}, "alpha", newer)
	step("holder back", map[string][]ServicePort{"ns/zeta": {older}}, "zeta", older, newer)
	step("the other deleted", map[string][]ServicePort{"ns/alpha": nil}, "zeta", older)
	if len(st.conflicts) != 0 {
		t.Fatalf("conflicts left: %v", st.conflicts)
	}
}
