package masq

import (
	"context"
	"net"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

func cidr(s string) *net.IPNet { _, n, _ := net.ParseCIDR(s); return n }

func TestBuildAndReapply(t *testing.T) {
	fake := knftables.NewFake(knftables.InetFamily, TableName)
	w := NewWriterWith(fake)
	d := Desired{ClusterCIDRs: []*net.IPNet{cidr("10.244.0.0/16")}, Exempt: []*net.IPNet{cidr("10.244.0.0/16"), cidr("198.18.0.0/15")}}
	if err := w.Apply(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	// A second full sync must not duplicate rules or elements.
	if err := w.Apply(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	rules, err := fake.ListRules(context.Background(), "postrouting")
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 1 || !strings.Contains(rules[0].Rule, "ip saddr 10.244.0.0/16 ip daddr != @no-masq-v4 masquerade") {
		t.Fatalf("rules: %+v", rules)
	}
	elems, _ := fake.ListElements(context.Background(), "set", "no-masq-v4")
	if len(elems) != 2 {
		t.Fatalf("elements: %+v", elems)
	}
	// Shrinking the exempt list removes the old element.
	d.Exempt = d.Exempt[:1]
	if err := w.Apply(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	elems, _ = fake.ListElements(context.Background(), "set", "no-masq-v4")
	if len(elems) != 1 || elems[0].Key[0] != "10.244.0.0/16" {
		t.Fatalf("elements after shrink: %+v", elems)
	}
}

func TestCollapse(t *testing.T) {
	got := collapse([]*net.IPNet{cidr("198.18.0.0/15"), cidr("198.18.1.10/32"), cidr("10.244.0.0/16"), cidr("10.244.0.0/16"), cidr("203.0.113.5/32")})
	var s []string
	for _, n := range got {
		s = append(s, n.String())
	}
	if strings.Join(s, ",") != "198.18.0.0/15,10.244.0.0/16,203.0.113.5/32" {
		t.Fatalf("got %v", s)
	}
}
