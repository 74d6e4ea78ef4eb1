//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"weft.dev/weft/internal/cni"
	"weft.dev/weft/internal/lab"
)

func nodeByName(t *testing.T, name string) *corev1.Node {
	n, err := client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func ipamFile(node, ip string) string {
	return filepath.Join(theLab.NodeRoot(node), "var", "lib", "weft", "cni", "weft", ip)
}

// A Deployment's pods become Ready with addresses from their node's
// podCIDR; deleting them frees the addresses and their host veths.
func TestDeploymentPodsGetNodePodCIDRAddresses(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	pods := deployWeb(t, ns, 6)
	type held struct{ node, ip, veth string }
	var all []held
	for _, p := range pods {
		node := nodeByName(t, p.Spec.NodeName)
		_, cidr, err := net.ParseCIDR(node.Spec.PodCIDR)
		if err != nil {
			t.Fatalf("node %s podCIDR %q: %v", node.Name, node.Spec.PodCIDR, err)
		}
		ip := net.ParseIP(p.Status.PodIP)
		if ip == nil || !cidr.Contains(ip) {
			t.Fatalf("pod %s on %s has IP %q outside podCIDR %s", p.Name, node.Name, p.Status.PodIP, cidr)
		}
		if p.Status.HostIP != node.Status.Addresses[0].Address {
			t.Errorf("pod %s hostIP %s, node InternalIP %s", p.Name, p.Status.HostIP, node.Status.Addresses[0].Address)
		}
		if _, err := os.Stat(ipamFile(node.Name, p.Status.PodIP)); err != nil {
			t.Fatalf("pod %s address %s not in %s's IPAM store: %v", p.Name, p.Status.PodIP, node.Name, err)
		}
		all = append(all, held{node.Name, p.Status.PodIP, cni.HostVethName(string(p.UID), "eth0")})
	}
	if err := client.AppsV1().Deployments(ns).Delete(ctx, "web", metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "pods gone", func() error {
		l, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(l.Items) > 0 {
			return fmt.Errorf("%d pods left", len(l.Items))
		}
		return nil
	})
	for _, h := range all {
		eventually(t, 10*time.Second, "address freed", func() error {
			if _, err := os.Stat(ipamFile(h.node, h.ip)); err == nil {
				return fmt.Errorf("%s still allocated on %s", h.ip, h.node)
			}
			return nil
		})
		if out, err := hostCommand("ip", "-n", h.node, "link", "show", h.veth); err == nil {
			t.Errorf("host veth %s of a deleted pod still on %s: %s", h.veth, h.node, out)
		}
	}
}

// pinnedPod is a test server on a given node.
func pinnedPod(ns, name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{Name: "server", Image: "weft/testserver",
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1}}},
		},
	}
}

func createReady(t *testing.T, pods ...*corev1.Pod) map[string]*corev1.Pod {
	t.Helper()
	ctx := context.Background()
	for _, p := range pods {
		if _, err := client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	out := map[string]*corev1.Pod{}
	for _, p := range pods {
		eventually(t, 60*time.Second, "pod "+p.Name+" Ready", func() error {
			got, err := client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !lab.PodReady(got) {
				return fmt.Errorf("phase %s", got.Status.Phase)
			}
			out[p.Name] = got
			return nil
		})
	}
	return out
}

// Pod-to-pod traffic on one node keeps the source pod IP, over TCP and
// UDP; traffic to the outside namespace leaves with the node's IP.
func TestSameNodeTrafficAndEgress(t *testing.T) {
	ns := newNamespace(t)
	pods := createReady(t, pinnedPod(ns, "a", "weft-node-1"), pinnedPod(ns, "b", "weft-node-1"))
	a, b := pods["a"], pods["b"]
	if got := curl(t, ns+"/a", fmt.Sprintf("http://%s:8080/clientip", b.Status.PodIP)); got != a.Status.PodIP {
		t.Fatalf("b saw client %q, want a's IP %s", got, a.Status.PodIP)
	}
	if got := curl(t, ns+"/b", fmt.Sprintf("http://%s:8080/hostname", a.Status.PodIP)); got != "a" {
		t.Fatalf("b reached %q, want a", got)
	}
	// TCP and UDP echo across the veths.
	out, err := execIn(t, ns+"/a", "", "sh", "-c", fmt.Sprintf("echo tcp-hello | timeout 5 bash -c 'exec 3<>/dev/tcp/%s/8081; cat >&3; head -c 10 <&3'", b.Status.PodIP))
	if err != nil || out != "tcp-hello" {
		t.Fatalf("TCP echo: %q %v", out, err)
	}
	udp := fmt.Sprintf("exec 3<>/dev/udp/%s/8081; printf udp-hello >&3; timeout 3 head -c 9 <&3", b.Status.PodIP)
	out, err = execIn(t, ns+"/a", "", "bash", "-c", udp)
	if err != nil || out != "udp-hello" {
		t.Fatalf("UDP echo: %q %v", out, err)
	}
	node := nodeByName(t, "weft-node-1")
	if got := curl(t, ns+"/a", "http://"+lab.OutsideIP+":8080/clientip"); got != node.Status.Addresses[0].Address {
		t.Fatalf("outside saw %q, want node IP %s (masquerade)", got, node.Status.Addresses[0].Address)
	}
	// The node itself reaches its pods directly (probes depend on it).
	if out, err := execIn(t, "weft-node-1", "", "curl", "-sS", "-m", "5", "http://"+a.Status.PodIP+":8080/clientip"); err != nil || out != node.Status.Addresses[0].Address {
		t.Fatalf("node → pod: %q %v", out, err)
	}
}

// Containers of a pod share its network namespace.
func TestContainersShareLocalhost(t *testing.T) {
	ns := newNamespace(t)
	p := pinnedPod(ns, "duo", "weft-node-2")
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "side", Image: "busybox",
		Command: []string{"sh", "-c", "exec sleep infinity"}})
	createReady(t, p)
	out, err := execIn(t, ns+"/duo", "side", "curl", "-sS", "-m", "5", "http://127.0.0.1:8080/hostname")
	if err != nil || out != "duo" {
		t.Fatalf("side → server on localhost: %q %v", out, err)
	}
	if h, _ := execIn(t, ns+"/duo", "side", "hostname"); h != "duo" {
		t.Fatalf("hostname in pod = %q", h)
	}
}

// kubectl logs goes API server → kubelet API (:10250, TLS) → container log.
func TestKubectlLogs(t *testing.T) {
	ns := newNamespace(t)
	marker := fmt.Sprintf("weft-log-marker-%d", time.Now().UnixNano())
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "talker", Namespace: ns},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{Name: "c", Image: "busybox",
				Command: []string{"sh", "-c", "echo $(MSG) from $(POD); echo to-stderr >&2; exec sleep infinity"},
				Env: []corev1.EnvVar{{Name: "MSG", Value: marker},
					{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}}},
		},
	}
	createReady(t, p)
	want := marker + " from talker"
	eventually(t, 20*time.Second, "logs", func() error {
		b, err := client.CoreV1().Pods(ns).GetLogs("talker", &corev1.PodLogOptions{Container: "c"}).DoRaw(context.Background())
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), want) || !strings.Contains(string(b), "to-stderr") {
			return fmt.Errorf("logs %q lack %q", b, want)
		}
		return nil
	})
	var out strings.Builder
	if err := theLab.Kubectl([]string{"logs", "-n", ns, "talker", "--tail=2"}, nil, &out, &out); err != nil {
		t.Fatalf("kubectl logs: %v: %s", err, out.String())
	}
	if !strings.Contains(out.String(), want) {
		t.Fatalf("kubectl logs printed %q", out.String())
	}
}

// Readiness probes of each kind drive the Ready condition.
func TestReadinessProbes(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	mk := func(name string, probe corev1.ProbeHandler, cmd []string) *corev1.Pod {
		c := corev1.Container{Name: "c", Image: "x", Command: cmd,
			ReadinessProbe: &corev1.Probe{ProbeHandler: probe, PeriodSeconds: 1, FailureThreshold: 1},
			VolumeMounts:   []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](1), Containers: []corev1.Container{c},
				Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}}}
	}
	good := []*corev1.Pod{
		mk("http-ok", corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}, nil),
		mk("tcp-ok", corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8081)}}, nil),
		mk("exec-ok", corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}, nil),
	}
	createReady(t, good...)
	bad := []*corev1.Pod{
		mk("http-bad", corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/nope", Port: intstr.FromInt32(8080)}}, nil),
		mk("tcp-bad", corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(9999)}}, nil),
		mk("exec-file", corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-f", "/data/ready"}}}, nil),
	}
	for _, p := range bad {
		if _, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Running but not Ready, and staying so.
	for _, p := range bad {
		eventually(t, 60*time.Second, p.Name+" running", func() error {
			got, err := client.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if got.Status.Phase != corev1.PodRunning {
				return fmt.Errorf("phase %s", got.Status.Phase)
			}
			return nil
		})
	}
	time.Sleep(4 * time.Second)
	for _, p := range bad {
		got, _ := client.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
		if lab.PodReady(got) {
			t.Errorf("%s is Ready although its probe fails", p.Name)
		}
	}
	// Make the exec probe pass through the pod's emptyDir: it turns Ready.
	if _, err := execIn(t, ns+"/exec-file", "", "touch", "/data/ready"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "exec-file Ready", func() error {
		got, err := client.CoreV1().Pods(ns).Get(ctx, "exec-file", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !lab.PodReady(got) {
			return fmt.Errorf("not Ready")
		}
		return nil
	})
}

// A hostNetwork pod runs in its node's namespace with the node's IP.
func TestHostNetworkPod(t *testing.T) {
	ns := newNamespace(t)
	p := pinnedPod(ns, "hostnet", "weft-node-2")
	p.Spec.HostNetwork = true
	// Ports of its own: the node's namespace is shared with the agent.
	p.Spec.Containers[0].Args = []string{"--http-port", "18090", "--tcp-port", "18091", "--udp-port", "18091"}
	p.Spec.Containers[0].ReadinessProbe.TCPSocket.Port = intstr.FromInt32(18090)
	got := createReady(t, p)["hostnet"]
	node := nodeByName(t, "weft-node-2")
	ip := node.Status.Addresses[0].Address
	if got.Status.PodIP != ip {
		t.Fatalf("hostNetwork pod IP %s, want the node IP %s", got.Status.PodIP, ip)
	}
	// Reachable on the node IP from another node's pod.
	c := createReady(t, pinnedPod(ns, "client", "weft-node-1"))["client"]
	_ = c
	if out := curl(t, ns+"/client", "http://"+ip+":18090/hostname"); out != "hostnet" {
		t.Fatalf("hostNetwork pod answered %q", out)
	}
}

// restartPolicy and graceful deletion: OnFailure restarts a failing
// container, Never lets a pod succeed, and deletion waits the grace
// period for a container that ignores SIGTERM, not longer.
func TestRestartPolicyAndGracefulDeletion(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	mk := func(name string, policy corev1.RestartPolicy, grace int64, script string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.PodSpec{NodeName: "weft-node-1", RestartPolicy: policy, TerminationGracePeriodSeconds: ptr.To(grace),
				Containers: []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"sh", "-c", script}}}}}
	}
	for _, p := range []*corev1.Pod{
		mk("fails", corev1.RestartPolicyOnFailure, 1, "echo run; exit 3"),
		mk("done", corev1.RestartPolicyNever, 1, "exit 0"),
		mk("stubborn", corev1.RestartPolicyAlways, 3, `trap "" TERM; while true; do sleep 0.2; done`),
		mk("polite", corev1.RestartPolicyAlways, 30, `trap "exit 0" TERM; while true; do sleep 0.2; done`),
	} {
		if _, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	get := func(name string) *corev1.Pod {
		p, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	eventually(t, 30*time.Second, "OnFailure container restarted", func() error {
		p := get("fails")
		if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].RestartCount < 1 {
			return fmt.Errorf("status %+v", p.Status.ContainerStatuses)
		}
		if lt := p.Status.ContainerStatuses[0].LastTerminationState.Terminated; lt == nil || lt.ExitCode != 3 {
			return fmt.Errorf("last termination %+v", lt)
		}
		return nil
	})
	eventually(t, 30*time.Second, "Never pod Succeeded", func() error {
		if ph := get("done").Status.Phase; ph != corev1.PodSucceeded {
			return fmt.Errorf("phase %s", ph)
		}
		return nil
	})
	for _, c := range []struct {
		name     string
		min, max time.Duration
	}{{"stubborn", 3 * time.Second, 15 * time.Second}, {"polite", 0, 20 * time.Second}} {
		eventually(t, 30*time.Second, c.name+" running", func() error {
			if ph := get(c.name).Status.Phase; ph != corev1.PodRunning {
				return fmt.Errorf("phase %s", ph)
			}
			return nil
		})
		start := time.Now()
		if err := client.CoreV1().Pods(ns).Delete(ctx, c.name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, c.name+" deleted", func() error {
			if _, err := client.CoreV1().Pods(ns).Get(ctx, c.name, metav1.GetOptions{}); err == nil {
				return fmt.Errorf("still there")
			}
			return nil
		})
		if d := time.Since(start); d < c.min || d > c.max {
			t.Errorf("%s took %s to delete, want between %s and %s", c.name, d.Round(100*time.Millisecond), c.min, c.max)
		}
	}
}

// kubectl exec: API server → kubelet API /exec (SPDY or WebSocket) → a
// command in the container's namespaces, with stdin, stdout, stderr and
// the exit code.
func TestKubectlExec(t *testing.T) {
	ns := newNamespace(t)
	createReady(t, pinnedPod(ns, "ex", "weft-node-1"))
	var out, errb strings.Builder
	err := theLab.Kubectl([]string{"exec", "-n", ns, "ex", "--", "sh", "-c", "echo out-$(hostname); echo err >&2; exit 3"}, nil, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("exit code not carried: %v (stderr %q)", err, errb.String())
	}
	if strings.TrimSpace(out.String()) != "out-ex" || !strings.Contains(errb.String(), "err") {
		t.Fatalf("stdout %q stderr %q", out.String(), errb.String())
	}
	out.Reset()
	if err := theLab.Kubectl([]string{"exec", "-i", "-n", ns, "ex", "--", "cat"}, strings.NewReader("piped-in\n"), &out, &errb); err != nil {
		t.Fatalf("exec -i: %v %s", err, errb.String())
	}
	if strings.TrimSpace(out.String()) != "piped-in" {
		t.Fatalf("stdin not passed: %q", out.String())
	}
}

// Images map to programs: agnhost images run the built agnhost (also at
// /agnhost inside the container), pause images run nothing useful.
func TestAgnhostAndPauseImages(t *testing.T) {
	ns := newNamespace(t)
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ag", Namespace: ns},
		Spec: corev1.PodSpec{NodeName: "weft-node-1", TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{
				{Name: "netexec", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53", Args: []string{"netexec", "--http-port=8080", "--udp-port=8081"},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1}},
				{Name: "pause", Image: "registry.k8s.io/pause:3.10"},
			}}}
	got := createReady(t, p)["ag"]
	if out, err := execIn(t, "weft-node-2", "", "curl", "-sS", "-m", "3", "http://"+got.Status.PodIP+":8080/hostname"); err != nil || out != "ag" {
		t.Fatalf("agnhost netexec /hostname: %q %v", out, err)
	}
	var out, errb strings.Builder
	if err := theLab.Kubectl([]string{"exec", "-n", ns, "ag", "-c", "netexec", "--", "/agnhost", "--help"}, nil, &out, &errb); err != nil || !strings.Contains(out.String(), "Usage") {
		t.Fatalf("/agnhost in the container: %v %q %q", err, out.String(), errb.String())
	}
}

// kubectl port-forward: host loopback → API server → kubelet API
// /portForward → the pod's port.
func TestKubectlPortForward(t *testing.T) {
	ns := newNamespace(t)
	createReady(t, pinnedPod(ns, "pf", "weft-node-1"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(filepath.Join(theLab.ControlPlaneBinDir(), "kubectl"), "port-forward", "-n", ns, "pod/pf", fmt.Sprintf("%d:8080", port))
	cmd.Env = append(os.Environ(), "KUBECONFIG="+theLab.Kubeconfig())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	eventually(t, 15*time.Second, "port-forward answers", func() error {
		c := &http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/hostname", port))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "pf" {
			return fmt.Errorf("got %q", b)
		}
		return nil
	})
}

// A preStop hook runs before SIGTERM and the pod keeps serving meanwhile
// (the upstream Services specs count on it for terminating endpoints);
// deleting such a pod does not hold up other pods on the node.
func TestPreStopHookKeepsPodServing(t *testing.T) {
	ns := newNamespace(t)
	p := pinnedPod(ns, "slow", "weft-node-1")
	p.Spec.TerminationGracePeriodSeconds = ptr.To[int64](30)
	p.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
		Exec: &corev1.ExecAction{Command: []string{"sleep", "6"}}}}
	ip := createReady(t, p)["slow"].Status.PodIP
	ctx := context.Background()
	if err := client.CoreV1().Pods(ns).Delete(ctx, "slow", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if out, err := execIn(t, "weft-node-2", "", "curl", "-sS", "-m", "2", "http://"+ip+":8080/hostname"); err != nil || out != "slow" {
		t.Fatalf("terminating pod during its preStop hook: %q %v", out, err)
	}
	// Another pod on the same node starts meanwhile.
	createReady(t, pinnedPod(ns, "other", "weft-node-1"))
	eventually(t, 30*time.Second, "pod gone after the hook", func() error {
		if _, err := client.CoreV1().Pods(ns).Get(ctx, "slow", metav1.GetOptions{}); err == nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
}

// hostPort: the node forwards hostIP:hostPort to the pod; pods may share a
// port number on different host IPs or protocols (the upstream Conformance
// scenario), and other nodes and pods reach it on the node's address.
func TestHostPorts(t *testing.T) {
	ns := newNamespace(t)
	node := nodeByName(t, "weft-node-1")
	nodeIP := node.Status.Addresses[0].Address
	mk := func(name, hostIP string, proto corev1.Protocol) *corev1.Pod {
		p := pinnedPod(ns, name, "weft-node-1")
		port := int32(8080)
		if proto == corev1.ProtocolUDP {
			port = 8081 // the test server's UDP echo
		}
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: port, HostPort: 54323, HostIP: hostIP, Protocol: proto}}
		return p
	}
	createReady(t, mk("lo", "127.0.0.1", corev1.ProtocolTCP), mk("node", nodeIP, corev1.ProtocolTCP), mk("udp", nodeIP, corev1.ProtocolUDP))
	eventually(t, 20*time.Second, "hostPorts programmed", func() error {
		out, err := execIn(t, "weft-node-1", "", "curl", "-sS", "-m", "2", "--interface", nodeIP, "http://127.0.0.1:54323/hostname")
		if err != nil || out != "lo" {
			return fmt.Errorf("127.0.0.1: %q %v", out, err)
		}
		return nil
	})
	if out, err := execIn(t, "weft-node-1", "", "curl", "-sS", "-m", "2", "http://"+nodeIP+":54323/hostname"); err != nil || out != "node" {
		t.Errorf("node IP TCP: %q %v", out, err)
	}
	if out, err := execIn(t, "weft-node-1", "", "sh", "-c", "echo ping | nc -u -w 2 "+nodeIP+" 54323"); err != nil || out != "ping" {
		t.Errorf("node IP UDP: %q %v", out, err)
	}
	// From another node, and from a pod elsewhere.
	if out, err := execIn(t, "weft-node-2", "", "curl", "-sS", "-m", "2", "http://"+nodeIP+":54323/hostname"); err != nil || out != "node" {
		t.Errorf("from weft-node-2: %q %v", out, err)
	}
	cli := createReady(t, pinnedPod(ns, "cli", "weft-node-3"))["cli"]
	if out, err := execIn(t, ns+"/"+cli.Name, "", "curl", "-sS", "-m", "2", "http://"+nodeIP+":54323/hostname"); err != nil || out != "node" {
		t.Errorf("from a pod on weft-node-3: %q %v", out, err)
	}
	// A pod reaching its own hostPort (hairpin).
	if out, err := execIn(t, ns+"/node", "", "curl", "-sS", "-m", "2", "http://"+nodeIP+":54323/hostname"); err != nil || out != "node" {
		t.Errorf("hairpin: %q %v", out, err)
	}
}

// Init containers run to completion in order before the containers start;
// restartable init containers (sidecars) keep running beside them.
func TestInitContainersAndSidecars(t *testing.T) {
	ns := newNamespace(t)
	p := pinnedPod(ns, "init", "weft-node-2")
	// A top-level path no checkout lives under: mounted over /work, it
	// would hide the weft binary of a checkout in /work/... from the pod.
	vol := corev1.VolumeMount{Name: "work", MountPath: "/initwork"}
	p.Spec.Volumes = []corev1.Volume{{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	p.Spec.InitContainers = []corev1.Container{
		{Name: "first", Image: "busybox", Command: []string{"sh", "-c", "sleep 1; echo first > /initwork/order"}, VolumeMounts: []corev1.VolumeMount{vol}},
		{Name: "second", Image: "busybox", Command: []string{"sh", "-c", "echo second >> /initwork/order"}, VolumeMounts: []corev1.VolumeMount{vol}},
		{Name: "side", Image: "weft/testserver", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
			Args: []string{"--http-port=9090", "--tcp-port=9091", "--udp-port=9091", "--name=side"}},
	}
	p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{vol}
	got := createReady(t, p)["init"]
	if out, err := execIn(t, ns+"/init", "", "cat", "/initwork/order"); err != nil || out != "first\nsecond" {
		t.Errorf("init containers ran out of order: %q %v", out, err)
	}
	if len(got.Status.InitContainerStatuses) != 3 {
		t.Fatalf("init container statuses: %+v", got.Status.InitContainerStatuses)
	}
	for _, cs := range got.Status.InitContainerStatuses[:2] {
		if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
			t.Errorf("init container %s: %+v", cs.Name, cs.State)
		}
	}
	if cs := got.Status.InitContainerStatuses[2]; cs.State.Running == nil {
		t.Errorf("sidecar not running: %+v", cs.State)
	}
	if out, err := execIn(t, "weft-node-1", "", "curl", "-sS", "-m", "3", "http://"+got.Status.PodIP+":9090/hostname"); err != nil || out != "side" {
		t.Errorf("sidecar port: %q %v", out, err)
	}
	// A failing init container under restartPolicy Never fails the pod.
	bad := pinnedPod(ns, "bad", "weft-node-2")
	bad.Spec.RestartPolicy = corev1.RestartPolicyNever
	bad.Spec.InitContainers = []corev1.Container{{Name: "fail", Image: "busybox", Command: []string{"sh", "-c", "exit 3"}}}
	if _, err := client.CoreV1().Pods(ns).Create(context.Background(), bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "pod with a failed init container Failed", func() error {
		p, err := client.CoreV1().Pods(ns).Get(context.Background(), "bad", metav1.GetOptions{})
		if err != nil || p.Status.Phase != corev1.PodFailed {
			return fmt.Errorf("phase %v %v", p.Status.Phase, err)
		}
		return nil
	})
}

// Readiness probes keep running during the grace period and their result
// reaches the API: a server that fails its probe while draining turns
// not ready (and leaves the ready endpoints) before it exits.
func TestReadinessReportedWhileTerminating(t *testing.T) {
	ns := newNamespace(t)
	p := pinnedPod(ns, "draining", "weft-node-1")
	p.Spec.TerminationGracePeriodSeconds = ptr.To[int64](60)
	p.Spec.Containers = []corev1.Container{{Name: "netexec", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53",
		Args: []string{"netexec", "--http-port=8080", "--delay-shutdown=60"},
		ReadinessProbe: &corev1.Probe{PeriodSeconds: 1,
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(8080)}}}}}
	createReady(t, p)
	ctx := context.Background()
	if err := client.CoreV1().Pods(ns).Delete(ctx, "draining", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "terminating pod reported not ready", func() error {
		got, err := client.CoreV1().Pods(ns).Get(ctx, "draining", metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("pod gone before it was seen unready: %v", err)
		}
		for _, c := range got.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionFalse {
				return nil
			}
		}
		return fmt.Errorf("still ready: %+v", got.Status.Conditions)
	})
	// Done: do not wait out the 60 s.
	_ = client.CoreV1().Pods(ns).Delete(ctx, "draining", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
}
