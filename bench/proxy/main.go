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

	"weft.dev/weft/bench/internal/figure"
	"weft.dev/weft/bench/internal/peers"
	"weft.dev/weft/internal/lab"
	"weft.dev/weft/internal/testserver"
)

const ns = "bench-svc"

var binDir string

// level holds the figures at one service count; durations in seconds,
// memory in MiB.
type level struct {
	services         int
	weftFull, kpFull figure.Figure
	weftOne, kpOne   figure.Figure
	weftRSS, kpRSS   figure.Figure
	rr               rrRounds
}

// rrRounds are TCP request/response latencies through the ClusterIP and
// straight to the pod IP, alternating round by round, in µs.
type rrRounds struct {
	clusterP50, podP50, clusterP99, podP99, ratioP50, ratioP99 figure.Rounds
}

func main() {
	// Registered first, so it runs last: after every cleanup below.
	defer figure.Exit()
	flag.StringVar(&binDir, "bin", "bin", "directory with weft and weft-cni")
	levelsFlag := flag.String("levels", "10,1000,10000", "service counts")
	rrRounds := flag.Int("rr-rounds", 9, "alternating ClusterIP / pod IP latency rounds")
	npeers := flag.Int("peers", 1000, "peer Node objects in the cluster (API objects only), as a cluster of that size has")
	heapProfile := flag.String("heap-profile", "", "write the weft agent's heap profile after the last level to this file")
	sabotage := flag.String("sabotage", "", "break one side on purpose to check the bench fails closed: clusterip")
	flag.Parse()
	binDir, _ = filepath.Abs(binDir)
	l := lab.New(lab.DefaultStateDir, lab.DefaultCacheDir, binDir, os.Stderr)
	defer l.Down()
	ctx := context.Background()
	check(l.Up(ctx, lab.UpOptions{Workers: 2, Racks: 1, Backend: "auto"}))
	client, err := l.Client()
	check(err)
	// weft-node-2 belongs to kube-proxy alone.
	check(l.RemoveAgent(ctx, client, "weft-node-2"))
	_ = exec.Command("ip", "netns", "exec", "weft-node-2", "nft", "delete", "table", "inet", "weft-proxy").Run()

	check(peers.Create(ctx, client, *npeers))
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

	if *sabotage == "clusterip" {
		// Proves the bench fails closed: the client's packets to the
		// ClusterIP are dropped in its own namespace.
		out, err := exec.Command(filepath.Join(binDir, "weft"), "lab", "exec", ns+"/client", "--", "nft", "add table ip weft-sabotage; add chain ip weft-sabotage out { type filter hook output priority 0; ip daddr "+echo.Spec.ClusterIP+" drop; }").CombinedOutput()
		check(figure.WithOutput(err, out))
	}

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
		lv.weftRSS = agentRSS("weft-node-1", l)
		lv.rr = measureRR(*rrRounds, echo.Spec.ClusterIP+":8081", backendIP+":8081")
		levels = append(levels, lv)
	}
	if *heapProfile != "" {
		out, err := exec.Command("ip", "netns", "exec", "weft-node-1", "curl", "-sf", "-m", "30", "-o", *heapProfile, "http://127.0.0.1:9402/debug/pprof/heap").CombinedOutput()
		check(figure.WithOutput(err, out))
	}
	printResults(levels, *levelsFlag, *rrRounds, *npeers)
}

func printResults(levels []level, levelsFlag string, rounds, npeers int) {
	fmt.Printf("### Service proxy: weft beside kube-proxy v1.37.2 (nftables mode)\n\n")
	fmt.Printf("`go run ./bench/proxy -bin bin -levels %s` (part of `make bench`; `BENCH_PROXY_LEVELS` sets the levels), %s.\n\n", levelsFlag, figure.Stamp())
	fmt.Printf("One lab, one API server, %d more Node objects (API objects only, as a cluster of that size has; the agent routes to each). weft: the agent on weft-node-1. kube-proxy: built from k8s.io/kubernetes v1.37.2 (lab/k8s), `--proxy-mode=nftables`, alone on weft-node-2. Each service: one TCP port, one EndpointSlice with 10 ready endpoints. ", npeers)
	fmt.Printf("Full sync: the first sync of a freshly started process, both starting from no table (weft's deleted after its agent stops; kube-proxy's deleted after each level): `weft_proxy_last_full_sync_duration_seconds` and `kubeproxy_sync_full_proxy_rules_duration_seconds`, both timing the same span (from reading the changes to the health-check update and conntrack cleanup after the kernel write). ")
	fmt.Printf("One change: one EndpointSlice edited; the partial sync it causes on each side. RSS from /proc (the weft agent also runs the pod network, hostPort and node-local DNS). ")
	fmt.Printf("Latency: 64-byte TCP request/response between two pods on weft-node-1, through the ClusterIP (weft's datapath) and to the pod IP, %d rounds of 2000 round trips alternating the two; medians of the per-round p50 and p99 with the interquartile range across rounds, ratio = median of the per-round ratios.\n\n", rounds)
	fmt.Println("| services | weft full sync | kube-proxy full sync | speed-up | weft one change | kube-proxy one change | weft agent RSS | kube-proxy RSS |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, lv := range levels {
		fmt.Printf("| %d | %s | %s | %s | %s | %s | %s | %s |\n", lv.services,
			lv.weftFull.Format("%.3f s"), lv.kpFull.Format("%.3f s"), figure.Div(lv.kpFull, lv.weftFull).Format("%.1f×"),
			ms(lv.weftOne), ms(lv.kpOne), lv.weftRSS.Format("%.0f MiB"), lv.kpRSS.Format("%.0f MiB"))
	}
	fmt.Println()
	fmt.Println("| services | ClusterIP p50 | pod IP p50 | p50 ratio (IQR) | ClusterIP p99 | pod IP p99 | p99 ratio (IQR) |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- |")
	for _, lv := range levels {
		r := lv.rr
		fmt.Printf("| %d | %s µs (%s) | %s µs (%s) | %s (%s) | %s µs (%s) | %s µs (%s) | %s (%s) |\n", lv.services,
			r.clusterP50.Median().Format("%.1f"), r.clusterP50.Spread("%.1f"), r.podP50.Median().Format("%.1f"), r.podP50.Spread("%.1f"),
			r.ratioP50.Median().Format("%.2f"), r.ratioP50.Spread("%.2f"),
			r.clusterP99.Median().Format("%.0f"), r.clusterP99.Spread("%.0f"), r.podP99.Median().Format("%.0f"), r.podP99.Spread("%.0f"),
			r.ratioP99.Median().Format("%.2f"), r.ratioP99.Spread("%.2f"))
	}
	fmt.Println()
	last := levels[len(levels)-1]
	fmt.Printf("Targets at %d services: full sync ≥ 10× faster than kube-proxy: %s; one change ≤ 100 ms: %s; ClusterIP p50 latency ratio ≤ 1.05: %s; weft agent RSS ≤ 150 MiB: %s.\n\n",
		last.services, figure.Div(last.kpFull, last.weftFull).Judge("%.1f×", func(x float64) bool { return x >= 10 }),
		last.weftOne.Judge("%.3f s", func(x float64) bool { return x <= 0.1 }),
		last.rr.ratioP50.Median().Judge("%.3f", func(x float64) bool { return x <= 1.05 }),
		last.weftRSS.Judge("%.0f MiB", func(x float64) bool { return x <= 150 }))
}

func ms(f figure.Figure) string {
	if !f.OK() {
		return f.Format("")
	}
	return fmt.Sprintf("%.0f ms", f.Value*1000)
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

// measureWeft restarts weft-node-1's agent on an empty table and reads
// its first (full) sync, then times the partial sync of one change.
func measureWeft(ctx context.Context, l *lab.Lab, client kubernetes.Interface, n int) (full, one figure.Figure) {
	url := "http://127.0.0.1:9402/metrics" // the lab agent's --metrics-addr
	want := float64(n + 2)                 // + kubernetes and echo
	if _, err := waitMetric("weft-node-1", url, 10*time.Minute, func(m map[string]float64) bool { return m["weft_proxy_service_ports"] >= want }); err != nil {
		return figure.Missing("weft never programmed %d service ports: %v", n+2, err), figure.Missing("no full sync")
	}
	check(l.KillNodeProcess("weft-node-1", lab.ProcAgent, syscall.SIGTERM))
	_ = exec.Command("ip", "netns", "exec", "weft-node-1", "nft", "delete", "table", "inet", "weft-proxy").Run()
	check(l.StartNodeProcess("weft-node-1", lab.ProcAgent))
	m, err := waitMetric("weft-node-1", url, 10*time.Minute, func(m map[string]float64) bool {
		return m["weft_proxy_last_full_sync_duration_seconds"] > 0 && m["weft_proxy_service_ports"] >= want
	})
	full = figure.Of(m["weft_proxy_last_full_sync_duration_seconds"], err)
	time.Sleep(time.Second)
	before := nodeMetrics("weft-node-1", url)[`weft_proxy_syncs_total{result="ok"}`]
	_, err = client.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice("s00000", 0, 1), metav1.UpdateOptions{})
	check(err)
	m, err = waitMetric("weft-node-1", url, 30*time.Second, func(m map[string]float64) bool { return m[`weft_proxy_syncs_total{result="ok"}`] > before })
	one = figure.Of(m["weft_proxy_last_sync_duration_seconds"], err)
	_, err = client.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice("s00000", 0, 0), metav1.UpdateOptions{})
	check(err)
	return full, one
}

// waitMetric polls a node's metrics until done holds.
func waitMetric(node, url string, timeout time.Duration, done func(map[string]float64) bool) (map[string]float64, error) {
	deadline := time.Now().Add(timeout)
	for {
		m := nodeMetrics(node, url)
		if done(m) {
			return m, nil
		}
		if time.Now().After(deadline) {
			return m, fmt.Errorf("%s %s: not there after %s", node, url, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// measureKubeProxy starts kube-proxy afresh on weft-node-2 (no table) and
// reads its first full sync, then the partial sync of one change.
func measureKubeProxy(ctx context.Context, l *lab.Lab, client kubernetes.Interface, n int) (full, one, mem figure.Figure) {
	_ = exec.Command("pkill", "-f", "kube-proxy --proxy-mode=nftables").Run()
	_ = exec.Command("ip", "netns", "exec", "weft-node-2", "nft", "delete", "table", "ip", "kube-proxy").Run()
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
	m, err := waitMetric("weft-node-2", url, 10*time.Minute, func(m map[string]float64) bool { return m[kpKey("full", "count")] >= 1 })
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-proxy did not sync:\n%s\n", logBuf.String())
		return figure.Missing("kube-proxy full sync: %v", err), figure.Missing("kube-proxy did not sync"), figure.Missing("kube-proxy did not sync")
	}
	full = figure.Of(m[kpKey("full", "sum")]/m[kpKey("full", "count")], nil)
	time.Sleep(2 * time.Second)
	m = nodeMetrics("weft-node-2", url)
	c0, s0 := m[kpKey("partial", "count")], m[kpKey("partial", "sum")]
	_, err = client.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice("s00001", 1, 1), metav1.UpdateOptions{})
	check(err)
	m, err = waitMetric("weft-node-2", url, 60*time.Second, func(m map[string]float64) bool { return m[kpKey("partial", "count")] > c0 })
	one = figure.Of((m[kpKey("partial", "sum")]-s0)/(m[kpKey("partial", "count")]-c0), err)
	_, err = client.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice("s00001", 1, 0), metav1.UpdateOptions{})
	check(err)
	return full, one, figure.RSS(kp.Process.Pid)
}

func agentRSS(node string, l *lab.Lab) figure.Figure {
	pid := l.AgentPID(node)
	if pid == 0 {
		return figure.Missing("no agent runs on %s", node)
	}
	return figure.RSS(pid)
}

// measureRR alternates ClusterIP and pod IP rounds so machine noise hits
// both alike.
func measureRR(rounds int, clusterAddr, podAddr string) rrRounds {
	var r rrRounds
	for i := 0; i < rounds; i++ {
		c, cerr := rr("bench-svc/client", clusterAddr)
		p, perr := rr("bench-svc/client", podAddr)
		c50, c99 := figure.Of(us(c.P50), cerr), figure.Of(us(c.P99), cerr)
		p50, p99 := figure.Of(us(p.P50), perr), figure.Of(us(p.P99), perr)
		r.clusterP50.Add(c50)
		r.clusterP99.Add(c99)
		r.podP50.Add(p50)
		r.podP99.Add(p99)
		r.ratioP50.Add(figure.Div(c50, p50))
		r.ratioP99.Add(figure.Div(c99, p99))
	}
	return r
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func rr(target, addr string) (testserver.RRResult, error) {
	var r testserver.RRResult
	cmd := exec.Command(filepath.Join(binDir, "weft"), "lab", "exec", target, "--", filepath.Join(binDir, "weft"), "testserver", "tcprr", addr, "--count", "2000")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return r, fmt.Errorf("tcprr %s: %v %s", addr, err, stderr.String())
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("tcprr %s: %v", addr, err)
	}
	if r.Count == 0 {
		return r, fmt.Errorf("tcprr %s: no round trips", addr)
	}
	return r, nil
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
