package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/knftables"

	"weft.dev/weft/internal/testutil"
)

// topo: a node namespace routing between a client and a server namespace.
type topo struct{ node, client, server ns.NetNS }

func newTopo(t *testing.T) topo {
	testutil.RequireRoot(t)
	tp := topo{testutil.NewNetNS(t), testutil.NewNetNS(t), testutil.NewNetNS(t)}
	n, c, s := filepath.Base(tp.node.Path()), filepath.Base(tp.client.Path()), filepath.Base(tp.server.Path())
	for _, cmd := range [][]string{
		{"ip", "-n", n, "link", "add", "vc", "type", "veth", "peer", "name", "eth0", "netns", c},
		{"ip", "-n", n, "link", "add", "vs", "type", "veth", "peer", "name", "eth0", "netns", s},
		{"ip", "-n", n, "addr", "add", "10.244.0.1/24", "dev", "vc"},
		{"ip", "-n", n, "addr", "add", "10.244.1.1/24", "dev", "vs"},
		{"ip", "-n", n, "addr", "add", "198.18.100.1/32", "dev", "lo"},
		{"ip", "-n", n, "link", "set", "vc", "up"},
		{"ip", "-n", n, "link", "set", "vs", "up"},
		{"ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		// Nodes have a default route; locally sent packets need one
		// before the output hook's DNAT rewrites them.
		{"ip", "-n", n, "route", "add", "default", "dev", "vs"},
		{"ip", "-n", c, "addr", "add", "10.244.0.2/24", "dev", "eth0"},
		{"ip", "-n", c, "link", "set", "eth0", "up"},
		{"ip", "-n", c, "route", "add", "default", "via", "10.244.0.1"},
		{"ip", "-n", s, "addr", "add", "10.244.1.2/24", "dev", "eth0"},
		{"ip", "-n", s, "link", "set", "eth0", "up"},
		{"ip", "-n", s, "route", "add", "default", "via", "10.244.1.1"},
	} {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", cmd, err, out)
		}
	}
	return tp
}

// serve answers every connection with the client's address.
func serve(t *testing.T, n ns.NetNS, addr string) { serveName(t, n, addr, "") }

// dial connects from namespace n and returns what the server said.
func dial(n ns.NetNS, addr string) (string, error) {
	var out string
	err := n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		out = strings.TrimSpace(line)
		return err
	})
	return out, err
}

func service(name, ip string, port, nodePort int32) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
			Ports: []corev1.ServicePort{{Name: "http", Port: port, Protocol: corev1.ProtocolTCP}}}}
	if nodePort > 0 {
		svc.Spec.Type = corev1.ServiceTypeNodePort
		svc.Spec.Ports[0].NodePort = nodePort
	}
	return svc
}

func slice(svc, ip string, port int32, ready bool) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-abc", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}}},
	}
}

func TestPrivilegedProxyClusterIPNodePortReject(t *testing.T) {
	tp := newTopo(t)
	serve(t, tp.server, "10.244.1.2:8080")
	other := service("other", "10.96.0.52", 80, 0)
	other.Labels = map[string]string{"service.kubernetes.io/service-proxy-name": "someone-else"}
	// A slice labelled headless is ignored (kube-proxy's informers filter
	// it out), so its service has no endpoints here and rejects.
	headlessSlice := slice("hl", "10.244.1.2", 8080, true)
	headlessSlice.Labels["service.kubernetes.io/headless"] = ""
	h := startProxy(t, tp,
		service("web", "10.96.0.50", 80, 30080), slice("web", "10.244.1.2", 8080, true),
		service("empty", "10.96.0.51", 80, 0),
		other, slice("other", "10.244.1.2", 8080, true),
		service("hl", "10.96.0.53", 80, 0), headlessSlice,
	)
	client, ctx, p, sync := h.client, h.ctx, h.p, h.sync

	// ClusterIP from a pod: DNAT to the endpoint, pod source kept.
	if got, err := dial(tp.client, "10.96.0.50:80"); err != nil || got != "10.244.0.2" {
		t.Fatalf("ClusterIP from pod: %q %v (want source 10.244.0.2)", got, err)
	}
	// ClusterIP from the node itself (output hook): masqueraded.
	if got, err := dial(tp.node, "10.96.0.50:80"); err != nil || got == "" {
		t.Fatalf("ClusterIP from node: %q %v", got, err)
	}
	// NodePort on the node IP: reaches the endpoint, masqueraded.
	if got, err := dial(tp.client, "198.18.100.1:30080"); err != nil || got != "10.244.1.1" {
		t.Fatalf("NodePort: %q %v (want masqueraded source 10.244.1.1)", got, err)
	}
	// A service another proxy owns is left alone (not in any map).
	if out, _ := exec.Command("ip", "netns", "exec", filepath.Base(tp.node.Path()), "nft", "list", "table", "inet", TableName).CombinedOutput(); strings.Contains(string(out), "10.96.0.52") {
		t.Fatalf("service with service-proxy-name programmed:\n%s", out)
	}
	if _, err := dial(tp.client, "10.96.0.53:80"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("service whose only slice is labelled headless: %v, want refused", err)
	}
	// No endpoints: refused at once, not a timeout.
	start := time.Now()
	_, err := dial(tp.client, "10.96.0.51:80")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("service without endpoints: %v, want connection refused", err)
	}
	if time.Since(start) > time.Second {
		t.Fatalf("reject took %s", time.Since(start))
	}

	// Endpoint goes unready: the service now rejects, and its chains go.
	if _, err := client.DiscoveryV1().EndpointSlices("default").Update(ctx, slice("web", "10.244.1.2", 8080, false), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, func() bool {
		s, _ := p.slices.EndpointSlices("default").Get("web-abc")
		return s != nil && !*s.Endpoints[0].Conditions.Ready
	})
	sync()
	if _, err := dial(tp.client, "10.96.0.50:80"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("after endpoints went unready: %v, want refused", err)
	}
	if _, err := dial(tp.client, "198.18.100.1:30080"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("NodePort after endpoints went unready: %v, want refused", err)
	}
	out, _ := exec.Command("ip", "netns", "exec", filepath.Base(tp.node.Path()), "nft", "list", "table", "inet", TableName).CombinedOutput()
	if !strings.Contains(string(out), "chain services {") {
		t.Fatalf("listing the table: %s", out)
	}
	if strings.Contains(string(out), "svc-") || strings.Contains(string(out), "ep-") {
		t.Fatalf("stale service chains left:\n%s", out)
	}
}

func waitSynced(t *testing.T, cond func() bool) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("informer did not see the change")
}

func mustCIDR(s string) *net.IPNet {
	_, n, _ := net.ParseCIDR(s)
	return n
}

// harness is a proxy on fake informers writing a real table in tp.node.
type harness struct {
	p      *Proxy
	client *fake.Clientset
	ctx    context.Context
	// ctxCancel stops the informers (and a Run the test started).
	ctxCancel context.CancelFunc
	sync      func()
}

// startProxy runs one sync of a proxy for node "n1" over objs.
func startProxy(t *testing.T, tp topo, objs ...runtime.Object) *harness {
	t.Helper()
	return startProxyWith(t, tp, Config{ClusterCIDRs: []*net.IPNet{mustCIDR("10.244.0.0/16")},
		ServiceCIDRs: []*net.IPNet{mustCIDR("10.96.0.0/16")}, NodeName: "n1"}, objs...)
}

// startProxyWith runs one sync of a proxy with cfg (its family's table).
func startProxyWith(t *testing.T, tp topo, cfg Config, objs ...runtime.Object) *harness {
	t.Helper()
	h := &harness{client: fake.NewClientset(objs...)}
	factory := informers.NewSharedInformerFactory(h.client, 0)
	if err := tp.node.Do(func(ns.NetNS) error {
		nft, err := knftables.New(knftables.InetFamily, TableFor(cfg.Family))
		if err != nil {
			return err
		}
		h.p = New(cfg, nft, factory, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
		h.p.Bulk = &NetlinkElements{Table: TableFor(cfg.Family)} // as the agent has it
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h.ctx, h.ctxCancel = ctx, cancel
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	h.sync = func() {
		t.Helper()
		// Informers update their store before they call handlers: give
		// the handler of the change the test just waited for a moment to
		// record it, or the partial sync would not see it.
		for deadline := time.Now().Add(time.Second); h.p.state != nil && h.p.pending() == 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		if err := tp.node.Do(func(ns.NetNS) error { return h.p.Sync(ctx) }); err != nil {
			t.Fatalf("sync: %v", err)
		}
	}
	h.sync()
	return h
}

// A partial sync that needs a shared DNAT chain the table does not have
// yet (a service grows to an endpoint count no other service has) must
// load: nft re-reads the endpoint maps from the kernel for it.
func TestPrivilegedPartialSyncAddsSharedChain(t *testing.T) {
	tp := newTopo(t)
	serve(t, tp.server, "10.244.1.2:8080")
	h := startProxy(t, tp, service("web", "10.96.0.50", 80, 30080), slice("web", "10.244.1.2", 8080, true))
	grown := slice("web", "10.244.1.2", 8080, true)
	for _, ip := range []string{"10.244.1.2", "10.244.1.2"} {
		// The same server address under two more bucket numbers is enough
		// to need dnat-ip-3 and ext-np-3.
		grown.Endpoints = append(grown.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	grown.Endpoints[1].Addresses = []string{"10.244.1.3"}
	grown.Endpoints[2].Addresses = []string{"10.244.1.4"}
	if _, err := h.client.DiscoveryV1().EndpointSlices("default").Update(h.ctx, grown, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, func() bool {
		s, _ := h.p.slices.EndpointSlices("default").Get("web-abc")
		return s != nil && len(s.Endpoints) == 3
	})
	h.sync()
	out, _ := exec.Command("ip", "netns", "exec", filepath.Base(tp.node.Path()), "nft", "list", "table", "inet", TableName).CombinedOutput()
	for _, c := range []string{"dnat-ip-3", "dnat-np-3", "ext-np-3"} {
		if !strings.Contains(string(out), "chain "+c+" {") {
			t.Errorf("chain %s missing after the partial sync:\n%s", c, out)
		}
	}
	// Back to one endpoint: the service still answers.
	if _, err := h.client.DiscoveryV1().EndpointSlices("default").Update(h.ctx, slice("web", "10.244.1.2", 8080, true), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, func() bool {
		s, _ := h.p.slices.EndpointSlices("default").Get("web-abc")
		return s != nil && len(s.Endpoints) == 1
	})
	h.sync()
	if got, err := dial(tp.client, "10.96.0.50:80"); err != nil || got != "10.244.0.2" {
		t.Fatalf("ClusterIP after shrinking: %q %v", got, err)
	}
}

// A table deleted or a map removed by hand (`nft flush ruleset`, a
// firewall tool) is found by the periodic check and rewritten at once,
// not at the next hourly full sync.
func TestPrivilegedDriftRepaired(t *testing.T) {
	tp := newTopo(t)
	serve(t, tp.server, "10.244.1.2:8080")
	h := startProxy(t, tp, service("web", "10.96.0.50", 80, 30080), slice("web", "10.244.1.2", 8080, true))
	h.p.CheckEvery = time.Second
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tp.node.Do(func(ns.NetNS) error { h.p.Run(h.ctx); return nil })
	}()
	nsName := filepath.Base(tp.node.Path())
	nft := func(args ...string) ([]byte, error) {
		return exec.Command("ip", append([]string{"netns", "exec", nsName, "nft"}, args...)...).CombinedOutput()
	}
	for _, c := range []struct {
		breakIt string   // an nft script
		gone    []string // `nft list` arguments that fail right after it
	}{
		{"delete table inet " + TableName, []string{"table", "inet", TableName}},
		{"flush chain inet " + TableName + " nat-prerouting\ndelete chain inet " + TableName + " nat-prerouting",
			[]string{"chain", "inet", TableName, "nat-prerouting"}},
		{"flush ruleset", []string{"table", "inet", TableName}},
	} {
		cmd := exec.Command("ip", "netns", "exec", nsName, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(c.breakIt + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%q: %v %s", c.breakIt, err, out)
		}
		// Right after the break (the check runs every second) the
		// object is gone: the test did break something.
		if out, err := nft(append([]string{"list"}, c.gone...)...); err == nil {
			t.Fatalf("after %q, %v is still there:\n%s", c.breakIt, c.gone, out)
		}
		var got string
		var err error
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if got, err = dial(tp.client, "10.96.0.50:80"); err == nil {
				break
			}
		}
		if err != nil || got != "10.244.0.2" {
			t.Fatalf("after %q: ClusterIP not repaired within 5 s: %q %v", c.breakIt, got, err)
		}
		if out, err := nft(append([]string{"list"}, c.gone...)...); err != nil {
			t.Fatalf("after %q, %v not rewritten: %v %s", c.breakIt, c.gone, err, out)
		}
	}
	h.ctxCancel()
	<-done
}
