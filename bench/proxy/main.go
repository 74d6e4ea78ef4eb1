// Command proxy benchmarks weft's service proxy beside kube-proxy v1.37.2
// in nftables mode, in one lab against the same API server: full sync
// time at 1k and 10k services × 10 endpoints, time to apply one changed
// service, memory, and ClusterIP latency as a ratio to the pod IP. weft
// runs in weft-node-1's agent; kube-proxy runs alone in weft-node-2 (its
// weft agent stopped). It prints a Markdown section.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"weft.dev/weft/internal/lab"
	"weft.dev/weft/internal/testserver"
)

const ns = "bench-svc"

var binDir string

type level struct {
	services           int
	weftFull, kpFull   time.Duration
	weftOne, kpOne     time.Duration
	weftRSS, kpRSS     int64 // KiB
	clusterIPRR, podRR time.Duration
}

func main() {
	flag.StringVar(&binDir, "bin", "bin", "directory with weft and weft-cni")
	levelsFlag := flag.String("levels", "10,1000,10000", "service counts")
	flag.Parse()
	binDir, _ = filepath.Abs(binDir)
	l := lab.New(lab.DefaultStateDir, lab.DefaultCacheDir, binDir, os.Stderr)
	defer l.Down()
	ctx := context.Background()
	check(l.Up(ctx, lab.UpOptions{Workers: 2, Racks: 1, Backend: "auto"}))
	client, err := l.Client()
	check(err)
	// weft-node-2 belongs to kube-proxy alone.
	check(l.KillNodeProcess("weft-node-2", lab.ProcAgent, syscall.SIGTERM))
	_ = exec.Command("ip", "netns", "exec", "weft-node-2", "nft", "delete", "table", "inet", "weft-proxy").Run()

	_, err = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	check(err)
	time.Sleep(time.Second)
	// A real backend and client for the latency figures, both on node-1.
	for _, name := range []string{"backend", "client"} {
		_, err := client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"role": name}},
			Spec: corev1.PodSpec{NodeName: "weft-node-1", TerminationGracePeriodSeconds: ptr.To[int64](1),
				Containers: []corev1.Container{{Name: "c", Image: "weft/testserver"}}}}, metav1.CreateOptions{})
		check(err)
	}
	pods, err := lab.WaitPodsReady(ctx, client, ns, "role in (backend,client)", 2, time.Minute)
	check(err)
	var backendIP string
	for _, p := range pods {
		if p.Name == "backend" {
			backendIP = p.Status.PodIP
		}
	}
	echo, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"role": "backend"},
			Ports: []corev1.ServicePort{{Name: "tcp", Port: 8081, TargetPort: intstr.FromInt32(8081)}}}}, metav1.CreateOptions{})
	check(err)
	time.Sleep(2 * time.Second)

	var levels []level
	created := 0
	for _, s := range strings.Split(*levelsFlag, ",") {
		n, err := strconv.Atoi(s)
		check(err)
		fmt.Fprintf(os.Stderr, "creating services up to %d\n", n)
		check(createServices(ctx, client, created, n))
		created = n
		lv := level{services: n}
		lv.weftFull, lv.weftOne = measureWeft(ctx, l, client, n)
		lv.kpFull, lv.kpOne, lv.kpRSS = measureKubeProxy(ctx, l, client, n)
		lv.weftRSS = rss("agent-weft-node-1", l)
		lv.clusterIPRR = rr("bench-svc/client", echo.Spec.ClusterIP+":8081")
		lv.podRR = rr("bench-svc/client", backendIP+":8081")
		levels = append(levels, lv)
	}

	fmt.Printf("### Service proxy: weft beside kube-proxy v1.37.2 (nftables mode)\n\n")
	fmt.Printf("One lab, one API server. weft: the agent on weft-node-1 (a full sync at start and every hour, like kube-proxy: chains by nft, elements in one netlink batch; partial syncs of the changed services in one nft transaction). kube-proxy: built from k8s.io/kubernetes v1.37.2 (lab/k8s), `--proxy-mode=nftables`, alone on weft-node-2. Each service: one TCP port, one EndpointSlice with 10 ready endpoints. Full sync: the first sync of a freshly started weft agent (`weft_proxy_last_full_sync_duration_seconds`); kube-proxy's first (full) sync after a fresh start (`kubeproxy_sync_full_proxy_rules_duration_seconds`). One change: one EndpointSlice edited; weft's (partial) sync for it, kube-proxy's partial sync (`kubeproxy_sync_partial_proxy_rules_duration_seconds`). RSS from /proc. TCP RR: 64-byte request/response p50 from a pod to a pod on the same node, through the ClusterIP (weft) and to the pod IP.\n\n")
	fmt.Println("| services | weft full sync | kube-proxy full sync | speed-up | weft one change | kube-proxy one change | weft agent RSS | kube-proxy RSS | ClusterIP RR p50 | pod IP RR p50 | latency ratio |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, lv := range levels {
		fmt.Printf("| %d | %s | %s | %.1f× | %s | %s | %d MiB | %d MiB | %d µs | %d µs | %.2f |\n", lv.services,
			lv.weftFull.Round(time.Millisecond), lv.kpFull.Round(time.Millisecond), float64(lv.kpFull)/float64(lv.weftFull),
			lv.weftOne.Round(time.Millisecond), lv.kpOne.Round(time.Millisecond), lv.weftRSS/1024, lv.kpRSS/1024,
			lv.clusterIPRR.Microseconds(), lv.podRR.Microseconds(), float64(lv.clusterIPRR)/float64(lv.podRR))
	}
	fmt.Println()
	last := levels[len(levels)-1]
	fmt.Printf("Targets at %d services: full sync ≥ 10× faster than kube-proxy: %s (%.1f×); one change ≤ 100 ms: %s (%s); latency ratio ≤ 1.05: %s (%.2f).\n\n",
		last.services, verdict(float64(last.kpFull)/float64(last.weftFull) >= 10), float64(last.kpFull)/float64(last.weftFull),
		verdict(last.weftOne <= 100*time.Millisecond), last.weftOne.Round(time.Millisecond),
		verdict(float64(last.clusterIPRR)/float64(last.podRR) <= 1.05), float64(last.clusterIPRR)/float64(last.podRR))
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// createServices makes services from..to-1, each with a 10-endpoint slice.
func createServices(ctx context.Context, client kubernetes.Interface, from, to int) error {
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	work := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				name := fmt.Sprintf("s%05d", i)
				_, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
					Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}, metav1.CreateOptions{})
				if err != nil {
					errs <- err
					return
				}
				if _, err := client.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(name, i, 0), metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := from; i < to; i++ {
		select {
		case err := <-errs:
			close(work)
			return err
		case work <- i:
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

func slice(name string, i, gen int) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name + "-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}}}
	for e := 0; e < 10; e++ {
		// Addresses nobody uses: only the sync is measured with these.
		ip := fmt.Sprintf("10.%d.%d.%d", 200+e+gen, (i>>8)&0xff, i&0xff)
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	return s
}

// nodeMetrics reads an HTTP metrics endpoint from inside a node netns.
func nodeMetrics(node, url string) map[string]float64 {
	out, err := exec.Command("ip", "netns", "exec", node, "curl", "-s", "-m", "5", url).Output()
	res := map[string]float64{}
	if err != nil {
		return res
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) == 2 {
			// weft's IPv4 proxy series, named without their ip_family
			// label (kube-proxy's keep theirs).
			name := f[0]
			if strings.HasPrefix(name, "weft_") {
				if strings.Contains(name, `ip_family="IPv6"`) {
					continue
				}
				name = strings.NewReplacer(`{ip_family="IPv4"}`, "", `ip_family="IPv4",`, "").Replace(name)
			}
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				res[name] = v
			}
		}
	}
	return res
}

func measureWeft(ctx context.Context, l *lab.Lab, client kubernetes.Interface, n int) (time.Duration, time.Duration) {
	url := "http://198.18.1.11:9402/metrics"
	want := float64(n + 2) // + kubernetes and echo
	deadline := time.Now().Add(10 * time.Minute)
	var m map[string]float64
	for time.Now().Before(deadline) {
		m = nodeMetrics("weft-node-1", url)
		if m["weft_proxy_service_ports"] >= want {
			break
		}
		time.Sleep(time.Second)
	}
	// Restart the agent: its first sync is a full one, like kube-proxy's
	// first sync after a fresh start below.
	check(l.KillNodeProcess("weft-node-1", lab.ProcAgent, syscall.SIGTERM))
	check(l.StartNodeProcess("weft-node-1", lab.ProcAgent))
	var full time.Duration
	for i := 0; i < 6000; i++ {
		m = nodeMetrics("weft-node-1", url)
		if v := m["weft_proxy_last_full_sync_duration_seconds"]; v > 0 {
			full = time.Duration(v * float64(time.Second))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// One change: a partial sync.
	time.Sleep(time.Second)
	before := nodeMetrics("weft-node-1", url)["weft_proxy_syncs_total{result=\"ok\"}"]
	_, err := client.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice("s00000", 0, 1), metav1.UpdateOptions{})
	check(err)
	for i := 0; i < 600; i++ {
		m = nodeMetrics("weft-node-1", url)
		if m["weft_proxy_syncs_total{result=\"ok\"}"] > before {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	one := time.Duration(m["weft_proxy_last_sync_duration_seconds"] * float64(time.Second))
	_, err = client.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice("s00000", 0, 0), metav1.UpdateOptions{})
	check(err)
	return full, one
}

func measureKubeProxy(ctx context.Context, l *lab.Lab, client kubernetes.Interface, n int) (time.Duration, time.Duration, int64) {
	_ = exec.Command("pkill", "-f", "kube-proxy --proxy-mode=nftables").Run()
	time.Sleep(time.Second)
	kp := exec.Command("ip", "netns", "exec", "weft-node-2", filepath.Join(l.ControlPlaneBinDir(), "kube-proxy"),
		"--proxy-mode=nftables", "--kubeconfig="+l.InternalKubeconfig(), "--hostname-override=weft-node-2",
		"--cluster-cidr=10.244.0.0/16", "--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256",
		"--conntrack-max-per-core=0", "--v=0")
	var logBuf bytes.Buffer
	kp.Stdout, kp.Stderr = &logBuf, &logBuf
	check(kp.Start())
	defer func() {
		kp.Process.Signal(syscall.SIGTERM)
		kp.Wait()
		_ = exec.Command("ip", "netns", "exec", "weft-node-2", "nft", "delete", "table", "ip", "kube-proxy").Run()
	}()
	url := "http://127.0.0.1:10249/metrics"
	var m map[string]float64
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		m = nodeMetrics("weft-node-2", url)
		if m[kpKey("full", "count")] >= 1 {
			break
		}
		if kp.ProcessState != nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if m[kpKey("full", "count")] < 1 {
		fmt.Fprintf(os.Stderr, "kube-proxy did not sync:\n%s\n", logBuf.String())
		os.Exit(1)
	}
	full := time.Duration(m[kpKey("full", "sum")] / m[kpKey("full", "count")] * float64(time.Second))
	time.Sleep(2 * time.Second)
	m = nodeMetrics("weft-node-2", url)
	c0, s0 := m[kpKey("partial", "count")], m[kpKey("partial", "sum")]
	_, err := client.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice("s00001", 1, 1), metav1.UpdateOptions{})
	check(err)
	for i := 0; i < 600; i++ {
		m = nodeMetrics("weft-node-2", url)
		if m[kpKey("partial", "count")] > c0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	one := time.Duration((m[kpKey("partial", "sum")] - s0) / (m[kpKey("partial", "count")] - c0) * float64(time.Second))
	_, err = client.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice("s00001", 1, 0), metav1.UpdateOptions{})
	check(err)
	return full, one, procRSS(kp.Process.Pid)
}

func rss(proc string, l *lab.Lab) int64 {
	b, err := os.ReadFile(filepath.Join(l.Dir(), "pids", proc+".pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return procRSS(pid)
}

// procRSS returns VmRSS in KiB; for `ip netns exec` wrappers it follows
// to the child when the wrapper exec'd.
func procRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

func rr(target, addr string) time.Duration {
	out, err := exec.Command(filepath.Join(binDir, "weft"), "lab", "exec", target, "--", filepath.Join(binDir, "weft"), "testserver", "tcprr", addr, "--count", "3000").Output()
	if err != nil {
		return 0
	}
	var r testserver.RRResult
	_ = json.Unmarshal(out, &r)
	return r.P50
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func kpKey(kind, suffix string) string {
	return fmt.Sprintf(`kubeproxy_sync_%s_proxy_rules_duration_seconds_%s{ip_family="IPv4"}`, kind, suffix)
}
