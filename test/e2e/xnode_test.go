//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"weft.dev/weft/internal/lab"
	"weft.dev/weft/internal/routing"
)

// labNode describes a worker for the matrix.
type labNode struct {
	name, ip, podCIDR string
	rack              string
}

func workers(t *testing.T) []labNode {
	t.Helper()
	nodes, err := client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []labNode
	for _, n := range nodes.Items {
		out = append(out, labNode{name: n.Name, ip: routing.PeerFromNode(&n).NodeIP.String(), podCIDR: n.Spec.PodCIDR,
			rack: n.Labels["topology.kubernetes.io/zone"]})
	}
	return out
}

func daemonSet(t *testing.T, ns string) []corev1.Pod {
	t.Helper()
	labels := map[string]string{"app": "ds"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "ds", Namespace: ns},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers: []corev1.Container{{Name: "server", Image: "weft/testserver",
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1}}}},
			},
		},
	}
	if _, err := client.AppsV1().DaemonSets(ns).Create(context.Background(), ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, n := range workers(t) {
		if n.name != lab.ControlPlane {
			want++
		}
	}
	pods, err := lab.WaitPodsReady(context.Background(), client, ns, "app=ds", want, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return pods
}

// reachability runs the pod × pod matrix over TCP (source IP checked) and
// UDP, and pod → every node IP. sameRackOnly marks host-gw, where
// cross-rack pairs must fail.
func reachability(t *testing.T, pods []corev1.Pod, sameRackOnly bool) {
	t.Helper()
	rack := map[string]string{}
	for _, n := range workers(t) {
		rack[n.name] = n.rack
	}
	type result struct{ from, to, err string }
	var mu sync.Mutex
	var failures []result
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, a := range pods {
		for _, b := range pods {
			if a.Name == b.Name {
				continue
			}
			a, b := a, b
			expect := !sameRackOnly || rack[a.Spec.NodeName] == rack[b.Spec.NodeName]
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				out, err := execIn(t, a.Namespace+"/"+a.Name, "", "curl", "-sS", "-m", "3", "http://"+b.Status.PodIP+":8080/clientip")
				tcpOK := err == nil && out == a.Status.PodIP
				udp := fmt.Sprintf("exec 3<>/dev/udp/%s/8081; printf ping-%s >&3; timeout 3 head -c %d <&3", b.Status.PodIP, a.Name, len("ping-"+a.Name))
				uout, uerr := execIn(t, a.Namespace+"/"+a.Name, "", "bash", "-c", udp)
				udpOK := uerr == nil && uout == "ping-"+a.Name
				mu.Lock()
				defer mu.Unlock()
				switch {
				case expect && !tcpOK:
					failures = append(failures, result{a.Spec.NodeName, b.Spec.NodeName, fmt.Sprintf("TCP: got %q (want source %s) %v", out, a.Status.PodIP, err)})
				case expect && !udpOK:
					failures = append(failures, result{a.Spec.NodeName, b.Spec.NodeName, fmt.Sprintf("UDP: got %q %v", uout, uerr)})
				case !expect && (tcpOK || udpOK):
					failures = append(failures, result{a.Spec.NodeName, b.Spec.NodeName, "reachable across racks with host-gw (expected unreachable)"})
				}
			}()
		}
	}
	wg.Wait()
	for _, f := range failures {
		t.Errorf("%s → %s: %s", f.from, f.to, f.err)
	}
	// Every pod reaches every node IP (the agents listen on :9402).
	for _, a := range pods {
		for _, n := range workers(t) {
			if sameRackOnly && rack[a.Spec.NodeName] != n.rack {
				continue
			}
			out, err := execIn(t, a.Namespace+"/"+a.Name, "", "curl", "-sS", "-m", "3", "http://"+n.ip+":9402/healthz")
			if err != nil || out != "ok" {
				t.Errorf("pod on %s → node %s (%s): %q %v", a.Spec.NodeName, n.name, n.ip, out, err)
			}
		}
	}
}

func routesOn(t *testing.T, node string) string {
	out, err := exec.Command("ip", "-n", node, "route", "show", "proto", "77").CombinedOutput()
	if err != nil {
		t.Fatalf("ip route on %s: %v %s", node, err, out)
	}
	return string(out)
}

func routeLine(routes, cidr string) string {
	for _, l := range strings.Split(routes, "\n") {
		if strings.HasPrefix(l, cidr+" ") {
			return l
		}
	}
	return ""
}

func TestCrossNodeVXLAN(t *testing.T) {
	st, err := theLab.LoadState()
	if err != nil {
		t.Fatal(err)
	}
	if st.Backend != "vxlan" || len(st.Nodes) != 5 {
		relab(t, lab.UpOptions{Workers: 4, Racks: 2, Backend: "vxlan"})
	}
	ns := newNamespace(t)
	pods := daemonSet(t, ns)
	reachability(t, pods, false)
	ws := workers(t)
	for _, n := range ws {
		routes := routesOn(t, n.name)
		for _, peer := range ws {
			if peer.name == n.name {
				continue
			}
			if l := routeLine(routes, peer.podCIDR); !strings.Contains(l, "dev weft.vxlan") {
				t.Errorf("%s: route to %s (%s) = %q, want via weft.vxlan", n.name, peer.name, peer.podCIDR, l)
			}
		}
	}

	t.Run("MTU", func(t *testing.T) {
		var a, b corev1.Pod
		for _, p := range pods {
			switch p.Spec.NodeName {
			case "weft-node-1":
				a = p
			case "weft-node-4":
				b = p
			}
		}
		mtu, err := execIn(t, ns+"/"+a.Name, "", "cat", "/sys/class/net/eth0/mtu")
		if err != nil || mtu != "1450" {
			t.Fatalf("pod MTU %q %v, want 1450 (1500 - 50 VXLAN)", mtu, err)
		}
		// 1450 - 20 (IP) - 8 (ICMP) = 1422 bytes of payload fit, unfragmented.
		if out, err := execIn(t, ns+"/"+a.Name, "", "ping", "-M", "do", "-s", "1422", "-c", "1", "-W", "3", b.Status.PodIP); err != nil {
			t.Fatalf("DF ping with 1422 bytes across nodes failed: %v %s", err, out)
		}
		out, err := execIn(t, ns+"/"+a.Name, "", "ping", "-M", "do", "-s", "1423", "-c", "1", "-W", "3", b.Status.PodIP)
		if err == nil {
			t.Fatalf("DF ping with 1423 bytes passed: %s", out)
		}
		if !strings.Contains(err.Error()+out, "mtu=1450") && !strings.Contains(err.Error()+out, "mtu = 1450") {
			t.Fatalf("1423-byte DF ping not refused with PMTU 1450: %v %s", err, out)
		}
	})

	t.Run("DriftRepair", func(t *testing.T) {
		peer := ws[0]
		on := "weft-node-1"
		if peer.name == on {
			peer = ws[1]
		}
		if out, err := exec.Command("ip", "-n", on, "route", "del", peer.podCIDR).CombinedOutput(); err != nil {
			t.Fatalf("delete route: %v %s", err, out)
		}
		mac := routing.VTEPMAC(peer.name).String()
		if out, err := exec.Command("bridge", "-n", on, "fdb", "del", mac, "dev", "weft.vxlan", "dst", peer.ip).CombinedOutput(); err != nil {
			t.Fatalf("delete fdb: %v %s", err, out)
		}
		eventually(t, 10*time.Second, "route and FDB entry restored", func() error {
			if routeLine(routesOn(t, on), peer.podCIDR) == "" {
				return fmt.Errorf("route to %s missing", peer.podCIDR)
			}
			out, _ := exec.Command("bridge", "-n", on, "fdb", "show", "dev", "weft.vxlan").Output()
			if !strings.Contains(string(out), mac+" dst "+peer.ip) {
				return fmt.Errorf("fdb lacks %s: %s", mac, out)
			}
			return nil
		})
	})

	t.Run("AgentKill9KeepsStream", func(t *testing.T) {
		var a, b corev1.Pod
		for _, p := range pods {
			switch p.Spec.NodeName {
			case "weft-node-1":
				a = p
			case "weft-node-3":
				b = p
			}
		}
		srv := exec.Command(repoRoot+"/bin/weft", "lab", "exec", ns+"/"+b.Name, "--", "iperf3", "-s", "-1", "-p", "5201")
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		defer srv.Process.Kill()
		time.Sleep(500 * time.Millisecond)
		cli := exec.Command(repoRoot+"/bin/weft", "lab", "exec", ns+"/"+a.Name, "--", "iperf3", "-c", b.Status.PodIP, "-p", "5201", "-t", "8", "-b", "50M")
		var out strings.Builder
		cli.Stdout, cli.Stderr = &out, &out
		if err := cli.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		for _, n := range []string{"weft-node-1", "weft-node-3"} {
			if err := theLab.KillNodeProcess(n, lab.ProcAgent, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Second)
		for _, n := range []string{"weft-node-1", "weft-node-3"} {
			if err := theLab.StartNodeProcess(n, lab.ProcAgent); err != nil {
				t.Fatal(err)
			}
		}
		if err := cli.Wait(); err != nil {
			t.Fatalf("stream broke across the agent restart: %v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), "receiver") {
			t.Fatalf("iperf3 did not finish: %s", out.String())
		}
		time.Sleep(3 * time.Second)
		// No stale or duplicate entries after the restart.
		for _, n := range []string{"weft-node-1", "weft-node-3"} {
			routes := strings.Split(strings.TrimSpace(routesOn(t, n)), "\n")
			if len(routes) != len(ws)-1 {
				t.Errorf("%s has %d weft routes, want %d: %v", n, len(routes), len(ws)-1, routes)
			}
			fdb, _ := exec.Command("bridge", "-n", n, "fdb", "show", "dev", "weft.vxlan").Output()
			if c := strings.Count(string(fdb), "permanent"); c != len(ws)-1 {
				t.Errorf("%s has %d FDB entries, want %d:\n%s", n, c, len(ws)-1, fdb)
			}
		}
	})

	t.Run("NodeRemovedAndAdded", func(t *testing.T) {
		gone := "weft-node-4"
		node, err := client.CoreV1().Nodes().Get(context.Background(), gone, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		oldCIDR := node.Spec.PodCIDR
		mac := routing.VTEPMAC(gone).String()
		// Stop its lab node first so it does not re-register at once.
		if err := theLab.KillNodeProcess(gone, lab.ProcKubelet, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := client.CoreV1().Nodes().Delete(context.Background(), gone, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for _, n := range []string{"weft-node-1", "weft-node-3"} {
			eventually(t, 2*time.Second, "entries of the removed node gone on "+n, func() error {
				if l := routeLine(routesOn(t, n), oldCIDR); l != "" {
					return fmt.Errorf("route left: %s", l)
				}
				fdb, _ := exec.Command("bridge", "-n", n, "fdb", "show", "dev", "weft.vxlan").Output()
				if strings.Contains(string(fdb), mac) {
					return fmt.Errorf("fdb entry left")
				}
				return nil
			})
		}
		t.Logf("removal propagated in %s", time.Since(start).Round(time.Millisecond))

		if err := theLab.StartNodeProcess(gone, lab.ProcKubelet); err != nil {
			t.Fatal(err)
		}
		// Wait until the new Node is complete (podCIDR, VTEP published),
		// then peers must route to it within 2 s.
		var cidr string
		eventually(t, 60*time.Second, "node re-registered with podCIDR and VTEP", func() error {
			n, err := client.CoreV1().Nodes().Get(context.Background(), gone, metav1.GetOptions{})
			if err != nil {
				return err
			}
			p := routing.PeerFromNode(n)
			if len(p.PodCIDRs) == 0 || p.VTEPMAC == nil || p.NodeIP == nil {
				return fmt.Errorf("not complete yet")
			}
			cidr = n.Spec.PodCIDR
			return nil
		})
		start = time.Now()
		for _, n := range []string{"weft-node-1", "weft-node-3"} {
			eventually(t, 2*time.Second, "route to the added node on "+n, func() error {
				if routeLine(routesOn(t, n), cidr) == "" {
					return fmt.Errorf("no route to %s", cidr)
				}
				return nil
			})
		}
		t.Logf("addition propagated in %s", time.Since(start).Round(time.Millisecond))
		// And it is reachable: a pod on node-1 reaches the new node's VTEP.
		vtep := routing.VTEPAddress([]*net.IPNet{mustCIDR(cidr)}).String()
		eventually(t, 10*time.Second, "new node reachable", func() error {
			_, err := execIn(t, "weft-node-1", "", "ping", "-c", "1", "-W", "1", vtep)
			return err
		})
	})
}

func mustCIDR(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

func TestCrossNodeHostGW(t *testing.T) {
	relab(t, lab.UpOptions{Workers: 4, Racks: 2, Backend: "host-gw"})
	ns := newNamespace(t)
	pods := daemonSet(t, ns)
	reachability(t, pods, true)
	ws := workers(t)
	rack := map[string]string{}
	for _, n := range ws {
		rack[n.name] = n.rack
	}
	for _, n := range ws {
		if out, err := exec.Command("ip", "-n", n.name, "link", "show", "weft.vxlan").CombinedOutput(); err == nil {
			t.Errorf("%s has a VXLAN device with host-gw: %s", n.name, out)
		}
		routes := routesOn(t, n.name)
		for _, peer := range ws {
			if peer.name == n.name {
				continue
			}
			l := routeLine(routes, peer.podCIDR)
			if rack[peer.name] == rack[n.name] {
				if !strings.Contains(l, "via "+peer.ip+" dev eth0") {
					t.Errorf("%s → %s: route %q, want via %s dev eth0", n.name, peer.name, l, peer.ip)
				}
			} else if l != "" {
				t.Errorf("%s → %s across racks has a route: %q", n.name, peer.name, l)
			}
		}
	}
	// Cross-rack peers are reported as Events on the peer Node.
	eventually(t, 20*time.Second, "HostGWPeerUnreachable events", func() error {
		evs, err := client.CoreV1().Events("").List(context.Background(), metav1.ListOptions{FieldSelector: "reason=HostGWPeerUnreachable"})
		if err != nil {
			return err
		}
		reported := map[string]bool{}
		for _, e := range evs.Items {
			reported[e.InvolvedObject.Name] = true
		}
		for _, n := range ws {
			if n.rack == "rack-b" && !reported[n.name] {
				return fmt.Errorf("no event for %s (have %v)", n.name, reported)
			}
		}
		return nil
	})
}

func TestCrossNodeAuto(t *testing.T) {
	relab(t, lab.UpOptions{Workers: 4, Racks: 2, Backend: "auto"})
	ns := newNamespace(t)
	pods := daemonSet(t, ns)
	reachability(t, pods, false)
	ws := workers(t)
	for _, n := range ws {
		routes := routesOn(t, n.name)
		for _, peer := range ws {
			if peer.name == n.name {
				continue
			}
			l := routeLine(routes, peer.podCIDR)
			if peer.rack == n.rack {
				if !strings.Contains(l, "via "+peer.ip+" dev eth0") {
					t.Errorf("%s → %s same rack: %q, want a direct route", n.name, peer.name, l)
				}
			} else if !strings.Contains(l, "dev weft.vxlan") {
				t.Errorf("%s → %s across racks: %q, want VXLAN", n.name, peer.name, l)
			}
		}
	}
}
