package proxy

import (
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// addIPv6 gives the test topology IPv6 addresses beside its IPv4 ones:
// client fd00:10:244::2, server fd00:10:244:1::2, node fd00:198:18:100::1.
func addIPv6(t *testing.T, tp topo) {
	t.Helper()
	n, c, s := filepath.Base(tp.node.Path()), filepath.Base(tp.client.Path()), filepath.Base(tp.server.Path())
	for _, cmd := range [][]string{
		{"ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
		{"ip", "-n", n, "addr", "add", "fd00:10:244::1/64", "dev", "vc", "nodad"},
		{"ip", "-n", n, "addr", "add", "fd00:10:244:1::1/64", "dev", "vs", "nodad"},
		{"ip", "-n", n, "addr", "add", "fd00:198:18:100::1/128", "dev", "lo"},
		{"ip", "-n", n, "-6", "route", "add", "default", "via", "fd00:10:244:1::2", "dev", "vs"},
		{"ip", "-n", c, "addr", "add", "fd00:10:244::2/64", "dev", "eth0", "nodad"},
		{"ip", "-n", c, "-6", "route", "add", "default", "via", "fd00:10:244::1"},
		{"ip", "-n", s, "addr", "add", "fd00:10:244:1::2/64", "dev", "eth0", "nodad"},
		{"ip", "-n", s, "-6", "route", "add", "default", "via", "fd00:10:244:1::1"},
	} {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", cmd, err, out)
		}
	}
	// Link-local addresses still run duplicate address detection; until
	// it ends, neighbour discovery (and the first packets) stall.
	for _, name := range []string{n, c, s} {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			out, _ := exec.Command("ip", "-n", name, "-6", "addr", "show", "tentative").CombinedOutput()
			if len(strings.TrimSpace(string(out))) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("IPv6 addresses in %s still tentative:\n%s", name, out)
			}
		}
	}
}

// A dual-stack node runs one proxy per family, each in its own table:
// real IPv4 and IPv6 packets to a dual-stack service's two ClusterIPs and
// its NodePort reach the endpoint of their family; an IPv6 ClusterIP
// without endpoints rejects at once; each table holds only its family.
func TestPrivilegedDualStackProxies(t *testing.T) {
	tp := newTopo(t)
	addIPv6(t, tp)
	serve(t, tp.server, "10.244.1.2:8080")
	serve(t, tp.server, "[fd00:10:244:1::2]:8080")
	web := service("web", "10.96.0.50", 80, 30080)
	web.Spec.ClusterIPs = []string{"10.96.0.50", "fd00:10:96::50"}
	web.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	slice6 := slice("web", "fd00:10:244:1::2", 8080, true)
	slice6.Name, slice6.AddressType = "web-v6", discoveryv1.AddressTypeIPv6
	empty := service("empty", "10.96.0.51", 80, 0)
	empty.Spec.ClusterIPs = []string{"10.96.0.51", "fd00:10:96::51"}
	objs := []runtime.Object{web, slice("web", "10.244.1.2", 8080, true), slice6, empty}
	cidrs := Config{NodeName: "n1",
		ClusterCIDRs: []*net.IPNet{mustCIDR("10.244.0.0/16"), mustCIDR("fd00:10:244::/56")},
		ServiceCIDRs: []*net.IPNet{mustCIDR("10.96.0.0/16"), mustCIDR("fd00:10:96::/112")}}
	v4, v6 := cidrs, cidrs
	v4.Family, v6.Family = corev1.IPv4Protocol, corev1.IPv6Protocol
	startProxyWith(t, tp, v4, objs...)
	startProxyWith(t, tp, v6, objs...)

	for _, c := range []struct{ addr, want string }{
		{"10.96.0.50:80", "10.244.0.2"},           // IPv4 ClusterIP: client address kept
		{"[fd00:10:96::50]:80", "fd00:10:244::2"}, // IPv6 ClusterIP likewise
		{"[fd00:198:18:100::1]:30080", ""},        // IPv6 NodePort (masqueraded: any source)
	} {
		got, err := dial(tp.client, c.addr)
		if err != nil || (c.want != "" && got != c.want) {
			t.Errorf("%s: %q %v, want %q", c.addr, got, err, c.want)
		}
	}
	// No endpoints: refused at once, not a timeout.
	start := time.Now()
	_, err := dial(tp.client, "[fd00:10:96::51]:80")
	if err == nil || !strings.Contains(err.Error(), "refused") || time.Since(start) > time.Second {
		t.Errorf("IPv6 ClusterIP without endpoints: %v after %v, want connection refused at once", err, time.Since(start))
	}
	// An unallocated IPv6 service IP is dropped (a timeout).
	if _, err := dial(tp.client, "[fd00:10:96::99]:80"); err == nil || strings.Contains(err.Error(), "refused") {
		t.Errorf("unallocated IPv6 service IP: %v, want a timeout", err)
	}
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(tp.node.Path()), "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	tables := strings.Split(string(out), "table inet ")
	for _, tb := range tables[1:] {
		name := strings.Fields(tb)[0]
		switch name {
		case TableName:
			if strings.Contains(tb, "fd00:") || strings.Contains(tb, "ipv6_addr") {
				t.Errorf("IPv4 table holds IPv6:\n%s", tb)
			}
		case TableName6:
			if strings.Contains(tb, "10.96.0.50") || strings.Contains(tb, "ipv4_addr") || !strings.Contains(tb, "fd00:10:96::50") {
				t.Errorf("IPv6 table wrong:\n%s", tb)
			}
		}
	}
	if len(tables) != 3 {
		t.Errorf("want two proxy tables, got:\n%s", out)
	}
}
