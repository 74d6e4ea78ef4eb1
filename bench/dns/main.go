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
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/bench/internal/figure"
	"weft.dev/weft/internal/lab"
)

const (
	ns       = "bench-dns"
	node     = "weft-node-1"
	nodeIP   = "198.18.1.11"
	weftPort = "5301"
	corePort = "5302"
)

// server is one DNS server under test and its figures.
type server struct {
	name, port string
	setup      string // how it was configured, for the report
	cmd        *exec.Cmd
	check      *checker
	up         error // it never answered
	qps        figure.Rounds
	p50, p99   figure.Rounds
}

func main() {
	// Registered first, so it runs last: after every cleanup below.
	defer figure.Exit()
	binDir := flag.String("bin", "bin", "directory with weft")
	services := flag.Int("services", 1000, "services in the cluster (the names queried)")
	seconds := flag.Int("seconds", 10, "length of each throughput run")
	rounds := flag.Int("rounds", 5, "throughput and latency rounds per server, alternating the servers")
	rate := flag.Int("latency-qps", 5000, "offered rate of the latency runs")
	corednsBin := flag.String("coredns", "", "CoreDNS binary (default: built from lab/coredns)")
	sabotage := flag.String("sabotage", "", "break one side on purpose to check the bench fails closed: coredns-servfail")
	flag.Parse()
	bin, _ := filepath.Abs(*binDir)
	if *corednsBin == "" {
		*corednsBin = filepath.Join(os.TempDir(), "weft-bench-coredns")
		out, err := exec.Command("go", "build", "-C", "lab/coredns", "-o", *corednsBin, ".").CombinedOutput()
		check(figure.WithOutput(err, out))
	}
	l := lab.New(lab.DefaultStateDir, lab.DefaultCacheDir, bin, os.Stderr)
	defer l.Down()
	ctx := context.Background()
	check(l.Up(ctx, lab.UpOptions{Workers: 1, Racks: 1, Backend: "auto"}))
	client, err := l.Client()
	check(err)
	want, err := createServices(ctx, client, *services)
	check(err)

	kubeconfig := l.InternalKubeconfig()
	corefile := filepath.Join(os.TempDir(), "weft-bench-Corefile")
	check(os.WriteFile(corefile, []byte(corefileFor(*sabotage, kubeconfig)), 0o644))
	defer os.Remove(corefile)
	servers := []*server{
		{name: "weft dns", port: weftPort, setup: fmt.Sprintf("the weft-dns binary the DNS Deployment runs, one UDP socket per CPU on the port (SO_REUSEPORT, %d)", runtime.NumCPU()),
			cmd: start("weft dns", filepath.Join(bin, "weft-dns"), "--kubeconfig="+kubeconfig, "--listen="+nodeIP+":"+weftPort,
				"--http="+nodeIP+":9301", "--upstream="+lab.OutsideDNS, "--nameserver-ip="+lab.ClusterDNS)},
		{name: "CoreDNS", port: corePort, setup: fmt.Sprintf("`multisocket` plugin: one socket per GOMAXPROCS on the port (SO_REUSEPORT, %d)", runtime.NumCPU()),
			cmd: start("coredns", *corednsBin, "-conf", corefile, "-dns.port", corePort)},
	}
	for _, s := range servers {
		defer stop(s.cmd)
		s.check = newChecker("/run/netns/"+node, nodeIP+":"+s.port, want)
	}

	// The query file: every service name, A records.
	qfile := filepath.Join(os.TempDir(), "weft-bench-queries")
	var q strings.Builder
	for i := 0; i < *services; i++ {
		fmt.Fprintf(&q, "svc-%d.%s.svc.cluster.local A\n", i, ns)
	}
	check(os.WriteFile(qfile, []byte(q.String()), 0o644))
	defer os.Remove(qfile)

	for _, s := range servers {
		if s.up = waitAnswers(s.port, fmt.Sprintf("svc-%d.%s.svc.cluster.local", *services-1, ns)); s.up == nil {
			_, _ = dnsperf(s.port, qfile, "-n", "1", "-l", "30") // warm the cache with every name
		}
	}
	// Rounds alternate between the servers so machine noise hits both.
	for r := 0; r < *rounds; r++ {
		for _, s := range servers {
			if s.up != nil {
				s.qps.Add(figure.Figure{Err: s.up})
				continue
			}
			s.check.during(func() {
				out, err := dnsperf(s.port, qfile, "-l", strconv.Itoa(*seconds), "-c", "8", "-q", "256")
				s.qps.Add(correctQPS(out, err))
			})
		}
	}
	for r := 0; r < *rounds; r++ {
		for _, s := range servers {
			if s.up != nil {
				s.p50.Add(figure.Figure{Err: s.up})
				s.p99.Add(figure.Figure{Err: s.up})
				continue
			}
			s.check.during(func() {
				out, err := dnsperf(s.port, qfile, "-l", "5", "-Q", strconv.Itoa(*rate), "-v")
				p50, p99 := percentiles(out, err)
				s.p50.Add(p50)
				s.p99.Add(p99)
			})
		}
	}
	for _, s := range servers {
		// One wrong record makes every figure of that server worthless.
		if err := s.check.err(); err != nil {
			s.qps.Add(figure.Figure{Err: err})
			s.p50.Add(figure.Figure{Err: err})
			s.p99.Add(figure.Figure{Err: err})
		}
	}
	report(servers, *services, *seconds, *rounds, *rate, *sabotage)
}

func report(servers []*server, services, seconds, rounds, rate int, sabotage string) {
	fmt.Println("### Cluster DNS: weft dns vs CoreDNS, cache-hit queries for cluster names")
	fmt.Println()
	fmt.Printf("`go run ./bench/dns -bin bin` (part of `make bench`), %s", figure.Stamp())
	if sabotage != "" {
		fmt.Printf(", **sabotaged: %s**", sabotage)
	}
	fmt.Printf(". %d ClusterIP services; both servers on %s against the same API server, %d CPUs. ", services, node, runtime.NumCPU())
	fmt.Printf("CoreDNS v1.15.0 (lab/coredns) with `multisocket errors cache kubernetes forward`. ")
	for _, s := range servers {
		fmt.Printf("%s: %s. ", s.name, s.setup)
	}
	fmt.Printf("dnsperf 2.10 on the same node, A queries for every service name (in both caches). ")
	fmt.Printf("Only correct answers count: QPS is NOERROR responses per second (dnsperf's rcode counts), and during every run a checker on the same node asks each name in turn and compares the records with the Service's ClusterIP; one wrong record fails all of that server's figures. ")
	fmt.Printf("Throughput: %d rounds of %d s, 8 clients, 256 outstanding. Latency: %d rounds of 5 s at %d queries/s offered, from each NOERROR query's latency (`dnsperf -v`). Rounds alternate the servers; medians with the interquartile range across rounds.\n\n", rounds, seconds, rounds, rate)
	fmt.Println("| server | correct answers/s (median) | IQR | p50 latency | p99 latency (median) | p99 IQR | answers checked | RSS |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, s := range servers {
		fmt.Printf("| %s | %s | %s | %s µs | %s µs | %s µs | %d | %s |\n", s.name, s.qps.Median().Format("%.0f"), s.qps.Spread("%.0f"),
			s.p50.Median().Format("%.0f"), s.p99.Median().Format("%.0f"), s.p99.Spread("%.0f"), s.check.checked, figure.RSS(s.cmd.Process.Pid).Format("%.0f MiB"))
	}
	w, c := servers[0], servers[1]
	ratio := figure.Div(w.qps.Median(), c.qps.Median())
	p99 := figure.Div(w.p99.Median(), c.p99.Median())
	fmt.Printf("\nQPS ratio weft/CoreDNS (medians), target ≥ 1.5: %s. p99 ratio weft/CoreDNS, target ≤ 1: %s.\n\n",
		ratio.Judge("%.3f", func(x float64) bool { return x >= 1.5 }), p99.Judge("%.3f", func(x float64) bool { return x <= 1 }))
}

// corefileFor is the baseline's configuration; the sabotaged one answers
// SERVFAIL to everything (its only upstream is a closed port).
func corefileFor(sabotage, kubeconfig string) string {
	if sabotage == "coredns-servfail" {
		return fmt.Sprintf(".:%s {\n    multisocket\n    errors\n    forward . 127.0.0.1:9\n}\n", corePort)
	}
	return fmt.Sprintf(`.:%s {
    multisocket
    errors
    cache 30
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . %s
}
`, corePort, kubeconfig, lab.OutsideDNS)
}

// createServices makes n Services and returns each one's FQDN → ClusterIP.
func createServices(ctx context.Context, client kubernetes.Interface, n int) (map[string]net.IP, error) {
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	var mu sync.Mutex
	want := map[string]net.IP{}
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
			got, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			want[svc.Name+"."+ns+".svc.cluster.local."] = net.ParseIP(got.Spec.ClusterIP)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	return want, <-errs
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

func waitAnswers(port, name string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("ip", "netns", "exec", node, "dig", "+short", "+time=1", "+tries=1", "-p", port, "@"+nodeIP, name).Output()
		if strings.TrimSpace(string(out)) != "" && !strings.HasPrefix(string(out), ";") {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("server on port %s does not answer %s", port, name)
}

func dnsperf(port, qfile string, args ...string) ([]byte, error) {
	argv := append([]string{"netns", "exec", node, "dnsperf", "-s", nodeIP, "-p", port, "-d", qfile}, args...)
	return exec.Command("ip", argv...).Output()
}

var (
	noerrorRe = regexp.MustCompile(`Response codes:.*\bNOERROR ([0-9]+) \(`)
	runTimeRe = regexp.MustCompile(`Run time \(s\):\s+([0-9.]+)`)
)

// correctQPS is NOERROR responses per second of a dnsperf run (the
// checker looks at their records).
func correctQPS(out []byte, err error) figure.Figure {
	if err != nil {
		return figure.Missing("dnsperf: %v", err)
	}
	n, t := noerrorRe.FindSubmatch(out), runTimeRe.FindSubmatch(out)
	if n == nil || t == nil {
		return figure.Missing("no NOERROR responses or run time in dnsperf output:\n%s", out)
	}
	count, err1 := strconv.ParseFloat(string(n[1]), 64)
	secs, err2 := strconv.ParseFloat(string(t[1]), 64)
	if err1 != nil || err2 != nil || secs == 0 {
		return figure.Missing("unreadable dnsperf output: %s / %s", n[1], t[1])
	}
	return figure.Of(count/secs, nil)
}

// percentiles reads `dnsperf -v` lines ("> NOERROR name A 0.000123") and
// returns p50 and p99 in µs of the NOERROR ones; more than 1 % of other
// rcodes fails both.
func percentiles(out []byte, err error) (p50, p99 figure.Figure) {
	if err != nil {
		return figure.Missing("dnsperf: %v", err), figure.Missing("dnsperf: %v", err)
	}
	var lat []float64
	other := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 || f[0] != ">" {
			continue
		}
		if f[1] != "NOERROR" {
			other++
			continue
		}
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			lat = append(lat, v*1e6)
		}
	}
	if len(lat) == 0 || other*100 > len(lat)+other {
		e := figure.Missing("%d NOERROR and %d other answers in the latency run", len(lat), other)
		return e, e
	}
	sort.Float64s(lat)
	return figure.Of(lat[len(lat)/2], nil), figure.Of(lat[len(lat)*99/100], nil)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench dns:", err)
		os.Exit(1)
	}
}
