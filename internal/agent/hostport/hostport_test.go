package hostport

import (
	"context"
	"net"
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
	ms, refused := Mappings(pods, []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("198.18.1.11")})
	if len(ms) != 3 || len(refused) != 0 {
		t.Fatalf("mappings: %+v, refused %+v", ms, refused)
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
		"meta nfproto ipv4 fib daddr type local meta l4proto tcp th dport 54323 dnat ip to 10.244.1.5:8080",
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

// A hostIP that is not the node's is refused for that pod only; dual-stack
// pods get a mapping per family; an IPv6 hostIP maps the IPv6 pod IP.
func TestMappingsRefuseAndIPv6(t *testing.T) {
	dual := pod("dual", "10.244.1.9", false, corev1.ContainerPort{ContainerPort: 8080, HostPort: 54400, Protocol: corev1.ProtocolTCP},
		corev1.ContainerPort{ContainerPort: 8081, HostPort: 54401, HostIP: "fd00:198:18:1::11", Protocol: corev1.ProtocolUDP})
	dual.Status.PodIPs = []corev1.PodIP{{IP: "10.244.1.9"}, {IP: "fd10:244:0:1::9"}}
	pods := []*corev1.Pod{
		pod("grab", "10.244.1.10", false, corev1.ContainerPort{ContainerPort: 80, HostPort: 54402, HostIP: "203.0.113.1"},
			corev1.ContainerPort{ContainerPort: 81, HostPort: 54403}),
		pod("bad", "10.244.1.11", false, corev1.ContainerPort{ContainerPort: 80, HostPort: 54404, HostIP: "not-an-ip"}),
		dual,
	}
	local := []net.IP{net.ParseIP("198.18.1.11"), net.ParseIP("fd00:198:18:1::11")}
	ms, refused := Mappings(pods, local)
	var got []string
	for _, m := range ms {
		got = append(got, m.Pod+" "+m.HostIP+" "+m.PodIP)
	}
	want := []string{"ns/dual fd00:198:18:1::11 fd10:244:0:1::9", "ns/dual  10.244.1.9", "ns/dual  fd10:244:0:1::9", "ns/grab  10.244.1.10"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("mappings\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(refused) != 2 || !strings.Contains(refused[0].Reason, "203.0.113.1 of hostPort 54402 is not an address of this node") ||
		!strings.Contains(refused[1].Reason, "not an IP address") {
		t.Fatalf("refused: %+v", refused)
	}
	fake := knftables.NewFake(knftables.InetFamily, TableName)
	tx := fake.NewTransaction()
	Build(tx, ms)
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{
		"ip6 daddr fd00:198:18:1::11 meta l4proto udp th dport 54401 dnat ip6 to [fd10:244:0:1::9]:8081",
		"meta nfproto ipv6 ip6 daddr != ::1 fib daddr type local meta l4proto tcp th dport 54400 dnat ip6 to [fd10:244:0:1::9]:8080",
		"hairpin6 { fd10:244:0:1::9 . fd10:244:0:1::9 }",
	} {
		if !strings.Contains(fake.Dump(), w) {
			t.Errorf("table lacks %q:\n%s", w, fake.Dump())
		}
	}
}
