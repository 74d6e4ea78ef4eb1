package hostport

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/knftables"
)

func pod(name, ip string, hostNet bool, ports ...corev1.ContainerPort) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec:   corev1.PodSpec{HostNetwork: hostNet, Containers: []corev1.Container{{Name: "c", Ports: ports}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip}}
}

func TestMappingsAndTable(t *testing.T) {
	pods := []*corev1.Pod{
		pod("any", "10.244.1.5", false, corev1.ContainerPort{ContainerPort: 8080, HostPort: 54323, Protocol: corev1.ProtocolTCP}),
		pod("lo", "10.244.1.6", false, corev1.ContainerPort{ContainerPort: 8080, HostPort: 54323, HostIP: "127.0.0.1", Protocol: corev1.ProtocolTCP}),
		pod("udp", "10.244.1.7", false, corev1.ContainerPort{ContainerPort: 8081, HostPort: 54323, HostIP: "198.18.1.11", Protocol: corev1.ProtocolUDP}),
		pod("nohost", "10.244.1.8", false, corev1.ContainerPort{ContainerPort: 80}),
		pod("hostnet", "198.18.1.11", true, corev1.ContainerPort{ContainerPort: 9000, HostPort: 9000}),
		pod("pending", "", false, corev1.ContainerPort{ContainerPort: 80, HostPort: 81}),
	}
	ms := Mappings(pods)
	if len(ms) != 3 {
		t.Fatalf("mappings: %+v", ms)
	}
	if ms[2].HostIP != "" {
		t.Errorf("the wildcard mapping must come after specific host IPs: %+v", ms)
	}
	fake := knftables.NewFake(knftables.InetFamily, TableName)
	tx := fake.NewTransaction()
	Build(tx, ms)
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	dump := fake.Dump()
	for _, want := range []string{
		"ip daddr 127.0.0.1 meta l4proto tcp th dport 54323 dnat ip to 10.244.1.6:8080",
		"ip daddr 198.18.1.11 meta l4proto udp th dport 54323 dnat ip to 10.244.1.7:8081",
		"fib daddr type local meta l4proto tcp th dport 54323 dnat ip to 10.244.1.5:8080",
		"hairpin { 10.244.1.5 . 10.244.1.5 }",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("table lacks %q:\n%s", want, dump)
		}
	}
	// Rebuilding replaces everything: a pod gone leaves no rule.
	tx = fake.NewTransaction()
	Build(tx, ms[:1])
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(fake.Dump(), "10.244.1.5") {
		t.Errorf("stale mapping after rebuild:\n%s", fake.Dump())
	}
}
