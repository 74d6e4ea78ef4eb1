// Command dns benchmarks weft dns against CoreDNS (kubernetes + cache
// plugins, built from its Go module by `make controlplane`), both run on the
// same lab node against the same API server, with dnsperf (Debian) querying
// cluster names that are in both servers' caches. It prints a Markdown
// section for bench/RESULTS.md.
//
// Throughput: dnsperf with no rate limit, best of the rounds.
// Latency: dnsperf -v at a fixed offered rate (the same for both), p50/p99
// computed from every query's latency.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/internal/lab"
)

const (
	ns       = "bench-dns"
	node     = "weft-node-1"
	nodeIP   = "198.18.1.11"
	weftPort = "5301"
	corePort = "5302"
)

func main() {
	binDir := flag.String("bin", "bin", "directory with weft")
	services := flag.Int("services", 1000, "services in the cluster (the names queried)")
	seconds := flag.Int("seconds", 10, "length of each throughput run")
	rounds := flag.Int("rounds", 3, "throughput rounds per server (best counts)")
	rate := flag.Int("latency-qps", 5000, "offered rate of the latency run")
	flag.Parse()
	bin, _ := filepath.Abs(*binDir)
	l := lab.New(lab.DefaultStateDir, lab.DefaultCacheDir, bin, os.Stderr)
	defer l.Down()
	ctx := context.Background()
	check(l.Up(ctx, lab.UpOptions{Workers: 1, Racks: 1, Backend: "auto"}))
	client, err := l.Client()
	check(err)
	check(createServices(ctx, client, *services))

	kubeconfig := l.InternalKubeconfig()
	weft := start("weft dns", filepath.Join(bin, "weft"), "dns", "--kubeconfig="+kubeconfig, "--listen="+nodeIP+":"+weftPort,
		"--http="+nodeIP+":9301", "--upstream="+lab.OutsideDNS, "--nameserver-ip="+lab.ClusterDNS)
	defer stop(weft)
	corefile := filepath.Join(os.TempDir(), "weft-bench-Corefile")
	check(os.WriteFile(corefile, []byte(fmt.Sprintf(`.:%s {
    errors
    cache 30
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . %s
}
`, corePort, kubeconfig, lab.OutsideDNS)), 0o644))
	defer os.Remove(corefile)
	core := start("coredns", filepath.Join(l.ControlPlaneBinDir(), "coredns"), "-conf", corefile, "-dns.port", corePort)
	defer stop(core)

	// The query file: every service name, A records.
	qfile := filepath.Join(os.TempDir(), "weft-bench-queries")
	var q strings.Builder
	for i := 0; i < *services; i++ {
		fmt.Fprintf(&q, "svc-%d.%s.svc.cluster.local A\n", i, ns)
	}
	check(os.WriteFile(qfile, []byte(q.String()), 0o644))
	defer os.Remove(qfile)

	for _, port := range []string{weftPort, corePort} {
		waitAnswers(port, fmt.Sprintf("svc-%d.%s.svc.cluster.local", *services-1, ns))
		// Warm both caches with every name.
		_, _ = dnsperf(port, qfile, "-n", "1", "-l", "30")
	}

	best := map[string]float64{}
	var runs [][2]float64
	for r := 0; r < *rounds; r++ {
		var pair [2]float64
		for i, port := range []string{weftPort, corePort} {
			out, err := dnsperf(port, qfile, "-l", strconv.Itoa(*seconds), "-c", "8", "-q", "256")
			check(err)
			qps := parseQPS(out)
			pair[i] = qps
			if qps > best[port] {
				best[port] = qps
			}
		}
		runs = append(runs, pair)
	}
	// Latency: rounds alternate between the servers; the median round
	// (by p99) counts, so one scheduling hiccup on a shared machine does not
	// decide the result.
	lat := map[string][2]float64{}
	latRuns := map[string][][2]float64{}
	for r := 0; r < *rounds; r++ {
		for _, port := range []string{weftPort, corePort} {
			out, err := dnsperf(port, qfile, "-l", "5", "-Q", strconv.Itoa(*rate), "-v")
			check(err)
			latRuns[port] = append(latRuns[port], percentiles(out))
		}
	}
	for port, runs := range latRuns {
		sort.Slice(runs, func(i, j int) bool { return runs[i][1] < runs[j][1] })
		lat[port] = runs[len(runs)/2]
	}
	rssW, rssC := procRSS(weft.Process.Pid), procRSS(core.Process.Pid)

	fmt.Println("### Cluster DNS: weft dns vs CoreDNS, cache-hit queries for cluster names")
	fmt.Println()
	fmt.Printf("`go run ./bench/dns` (part of `make bench`): %d ClusterIP services; both servers on %s against the same API server, ", *services, node)
	fmt.Printf("CoreDNS v1.15.0 with `errors cache kubernetes forward` (lab/coredns). dnsperf 2.10 on the same node, A queries for every service name (in both caches). ")
	fmt.Printf("Throughput: %d s runs, 8 clients, 256 outstanding, best of %d rounds. Latency: %d rounds of 5 s at %d queries/s offered, alternating servers, from each query's latency (`dnsperf -v`); the median round by p99 is shown.\n\n", *seconds, *rounds, *rounds, *rate)
	fmt.Println("| server | QPS (best) | QPS per round | p50 latency | p99 latency (median round) | p99 per round | RSS |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- |")
	for i, s := range []struct{ name, port string }{{"weft dns", weftPort}, {"CoreDNS", corePort}} {
		var per []string
		for _, r := range runs {
			per = append(per, fmt.Sprintf("%.0f", r[i]))
		}
		rss := rssW
		if i == 1 {
			rss = rssC
		}
		var p99s []string
		for _, r := range latRuns[s.port] {
			p99s = append(p99s, fmt.Sprintf("%.0f", r[1]*1e6))
		}
		fmt.Printf("| %s | %.0f | %s | %.0f µs | %.0f µs | %s µs | %d MiB |\n", s.name, best[s.port], strings.Join(per, ", "), lat[s.port][0]*1e6, lat[s.port][1]*1e6, strings.Join(p99s, ", "), rss>>20)
	}
	ratio := best[weftPort] / best[corePort]
	p99ok := lat[weftPort][1] <= lat[corePort][1]
	fmt.Printf("\nQPS ratio weft/CoreDNS: %.2f (target ≥ 1.5: %s). p99 no worse than CoreDNS: %s.\n\n", ratio, verdict(ratio >= 1.5), verdict(p99ok))
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func createServices(ctx context.Context, client kubernetes.Interface, n int) error {
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i), Namespace: ns},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "none"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
			if _, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func start(name string, argv ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + node}, argv...)...)
	logf, err := os.Create(filepath.Join(os.TempDir(), "weft-bench-"+strings.ReplaceAll(name, " ", "-")+".log"))
	check(err)
	cmd.Stdout, cmd.Stderr = logf, logf
	check(cmd.Start())
	return cmd
}

func stop(cmd *exec.Cmd) {
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

func waitAnswers(port, name string) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("ip", "netns", "exec", node, "dig", "+short", "+time=1", "+tries=1", "-p", port, "@"+nodeIP, name).Output()
		if strings.TrimSpace(string(out)) != "" && !strings.HasPrefix(string(out), ";") {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	check(fmt.Errorf("server on port %s does not answer %s", port, name))
}

func dnsperf(port, qfile string, args ...string) ([]byte, error) {
	argv := append([]string{"netns", "exec", node, "dnsperf", "-s", nodeIP, "-p", port, "-d", qfile}, args...)
	return exec.Command("ip", argv...).Output()
}

var qpsRe = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)

func parseQPS(out []byte) float64 {
	m := qpsRe.FindSubmatch(out)
	if m == nil {
		check(fmt.Errorf("no QPS in dnsperf output:\n%s", out))
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// percentiles reads `dnsperf -v` lines ("> NOERROR name A 0.000123") and
// returns p50 and p99 in seconds.
func percentiles(out []byte) [2]float64 {
	var lat []float64
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 5 && f[0] == ">" {
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				lat = append(lat, v)
			}
		}
	}
	if len(lat) == 0 {
		check(fmt.Errorf("no per-query latencies in dnsperf -v output"))
	}
	sort.Float64s(lat)
	return [2]float64{lat[len(lat)/2], lat[len(lat)*99/100]}
}

func procRSS(pid int) int64 {
	// The server is nsenter's child's exec: nsenter execs in place, so the
	// PID is the server's.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench dns:", err)
		os.Exit(1)
	}
}
