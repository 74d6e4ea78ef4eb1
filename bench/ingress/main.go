// Command ingress benchmarks weft ingress beside nginx (the Debian
// package) in one lab and one run: the same backend pod, the same load
// generator (wrk) from the same client pod, both proxies on the same node;
// requests/s and p99 over HTTP/1.1 keep-alive with 1 route and with 5,000
// routes, route propagation (Ingress created → served) at 5,000 routes,
// and each proxy's memory at 5,000 routes; then the Gateway API's part:
// propagation with 5,000 HTTPRoutes, requests failed during 100 route
// changes under load, memory.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"weft.dev/weft/bench/internal/figure"
	"weft.dev/weft/internal/lab"
	"weft.dev/weft/internal/testserver"
)

const (
	ns        = "bench-ingress"
	proxyNode = "weft-node-1" // weft ingress and nginx
	otherNode = "weft-node-2" // the backend and the load generator
)

var binDir string

func main() {
	defer figure.Exit()
	flag.StringVar(&binDir, "bin", "bin", "directory with weft and weft-cni")
	routes := flag.Int("routes", 5000, "routes of the second phase (hosts, 5 per Ingress)")
	rounds := flag.Int("rounds", 9, "wrk rounds per proxy and phase, alternating")
	seconds := flag.Int("seconds", 8, "seconds per wrk round")
	props := flag.Int("propagation-rounds", 20, "Ingresses (then HTTPRoutes) created one by one and timed to first 200")
	gwRoutes := flag.Int("gateway-routes", 5000, "HTTPRoutes of the Gateway API phase (0: none)")
	flag.Parse()
	binDir, _ = filepath.Abs(binDir)
	l := lab.New(lab.DefaultStateDir, lab.DefaultCacheDir, binDir, os.Stderr)
	defer l.Down()
	ctx := context.Background()
	check(l.Up(ctx, lab.UpOptions{Workers: 2, Racks: 1, Backend: "auto"}))
	client, err := l.Client()
	check(err)
	e := setup(ctx, l, client)
	defer func() {
		e.stopNginx()
		_ = os.RemoveAll(e.nginxDir)
	}()

	one := e.phase(ctx, 1, *rounds, *seconds)
	fmt.Fprintf(os.Stderr, "creating %d routes\n", *routes)
	check(createRoutes(ctx, client, 1, *routes))
	check(waitIngressStatuses(ctx, client))
	many := e.phase(ctx, *routes, *rounds, *seconds)
	many.propagation, many.propagationErr = e.propagation(ctx, *props)
	many.weftRSS, many.nginxRSS = e.weftRSS(), e.nginxRSS()
	report(one, many, *rounds, *seconds, *props)
	if *gwRoutes > 0 {
		reportGateway(e.gateway(ctx, *gwRoutes, *props), *props)
	}
}

// env is the bench's lab: the pods and where the proxies listen.
type env struct {
	l            *lab.Lab
	client       kubernetes.Interface
	weftIP       string // the weft ingress pod
	nginxIP      string // the pod whose network namespace nginx runs in
	backendIP    string
	nginxDir     string
	nginxCancel  context.CancelFunc
	nginxStopped chan error
}

type phase struct {
	routes            int
	weftRPS, nginxRPS figure.Rounds
	weftP99, nginxP99 figure.Rounds
	propagation       []float64 // ms
	propagationErr    error
	weftRSS, nginxRSS figure.Figure
}

// setup scales weft ingress to one replica on proxyNode, starts the
// backend and client pods on otherNode and an empty pod for nginx beside
// weft ingress, and the first route.
func setup(ctx context.Context, l *lab.Lab, client kubernetes.Interface) *env {
	_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	check(err)
	time.Sleep(time.Second) // the default ServiceAccount
	patch := fmt.Sprintf(`{"spec":{"replicas":1,"template":{"spec":{"nodeName":%q}}}}`, proxyNode)
	_, err = client.AppsV1().Deployments("kube-system").Patch(ctx, "weft-ingress", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	check(err)
	pod := func(name, node string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"role": name}},
			Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: ptr.To[int64](1),
				Containers: []corev1.Container{{Name: "c", Image: "weft/testserver"}}}}
	}
	for _, p := range []*corev1.Pod{pod("backend", otherNode), pod("client", otherNode), pod("nginx", proxyNode)} {
		_, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		check(err)
	}
	pods, err := lab.WaitPodsReady(ctx, client, ns, "role", 3, 2*time.Minute)
	check(err)
	e := &env{l: l, client: client}
	for _, p := range pods {
		switch p.Name {
		case "backend":
			e.backendIP = p.Status.PodIP
		case "nginx":
			e.nginxIP = p.Status.PodIP
		}
	}
	_, err = client.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"role": "backend"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}, metav1.CreateOptions{})
	check(err)
	check(createRoutes(ctx, client, 0, 1))
	e.weftIP = e.waitIngressPod(ctx)
	return e
}

// waitIngressPod returns the address of the one weft ingress pod once the
// Deployment has rolled to it.
func (e *env) waitIngressPod(ctx context.Context) string {
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		list, err := e.client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft-ingress"})
		check(err)
		var ready []corev1.Pod
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && p.Spec.NodeName == proxyNode && podReady(p) {
				ready = append(ready, p)
			}
		}
		if len(ready) == 1 && len(list.Items) == 1 {
			return ready[0].Status.PodIP
		}
	}
	check(fmt.Errorf("weft ingress did not become one ready pod on %s", proxyNode))
	return ""
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// host is route i's virtual host.
func host(i int) string { return fmt.Sprintf("h%d.example.com", i) }

// createRoutes makes routes [from, to) as Ingresses of five hosts each
// (the last may have fewer), all to the web Service.
func createRoutes(ctx context.Context, client kubernetes.Interface, from, to int) error {
	prefix := networkingv1.PathTypePrefix
	for start := from; start < to; start += 5 {
		var rules []networkingv1.IngressRule
		for i := start; i < min(start+5, to); i++ {
			rules = append(rules, networkingv1.IngressRule{Host: host(i), IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: &prefix, Backend: networkingv1.IngressBackend{
					Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}}}}}}})
		}
		ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("r%05d", start), Namespace: ns},
			Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("weft"), Rules: rules}}
		if _, err := client.NetworkingV1().Ingresses(ns).Create(ctx, ing, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// waitIngressStatuses waits until weft has written the load-balancer
// status of every Ingress: the rounds measure a settled proxy, not one
// whose process is still writing a thousand statuses from the bulk create
// (nginx has no such work; the Gateway phase waits the same way).
func waitIngressStatuses(ctx context.Context, client kubernetes.Interface) error {
	start := time.Now()
	for deadline := start.Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(3 * time.Second) {
		list, err := client.NetworkingV1().Ingresses(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		done := 0
		for _, ing := range list.Items {
			if len(ing.Status.LoadBalancer.Ingress) > 0 {
				done++
			}
		}
		if done == len(list.Items) {
			fmt.Fprintf(os.Stderr, "statuses of %d Ingresses written %.0f s after they were created\n", done, time.Since(start).Seconds())
			return nil
		}
	}
	return fmt.Errorf("the Ingresses' statuses were not all written in 5 minutes")
}

// check panics on an error, so deferred clean-up (nginx, the lab) runs.
func check(err error) {
	if err != nil {
		panic(fmt.Sprintf("bench: %v", err))
	}
}

// weftBin runs weft's testserver clients in the client pod.
func (e *env) inClient(ctx context.Context, limit time.Duration, argv ...string) (string, error) {
	var out, errb strings.Builder
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	err := e.l.Exec(ctx, lab.ExecOptions{Target: ns + "/client", Argv: argv, Stdout: &out, Stderr: &errb})
	if err != nil {
		return out.String(), fmt.Errorf("%v: %s", err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

var (
	rpsRE = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	p99RE = regexp.MustCompile(`\s99%\s+([0-9.]+)(us|ms|s)\b`)
	errRE = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)|Socket errors: .*`)
)

// wrk runs one round against addr with route's host and returns
// requests/s and p99 in µs; any error, non-2xx answer or socket error
// fails the round.
func (e *env) wrk(ctx context.Context, addr string, route, seconds int) (figure.Figure, figure.Figure) {
	out, err := e.inClient(ctx, time.Duration(seconds+30)*time.Second, "wrk", "-t", "2", "-c", "32", "-d", strconv.Itoa(seconds)+"s",
		"--latency", "-H", "Host: "+host(route), "http://"+addr+"/hostname")
	if err == nil {
		if m := errRE.FindString(out); m != "" {
			err = fmt.Errorf("wrk to %s: %s", addr, m)
		}
	}
	if err != nil {
		return figure.Missing("%v", err), figure.Missing("%v", err)
	}
	rps := parseFloat(rpsRE.FindStringSubmatch(out))
	p99 := figure.Missing("no p99 in wrk's output for %s", addr)
	if m := p99RE.FindStringSubmatch(out); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		p99 = figure.Of(v*map[string]float64{"us": 1, "ms": 1e3, "s": 1e6}[m[2]], nil)
	}
	return rps, p99
}

func parseFloat(m []string) figure.Figure {
	if m == nil {
		return figure.Missing("no requests/s in wrk's output")
	}
	return figure.Of(strconv.ParseFloat(m[1], 64))
}

// phase measures both proxies with n routes: nginx is (re)started with a
// server block per route, weft serves the Ingresses that exist; rounds
// alternate the two, the first round of each is a warm-up, and which goes
// first alternates too (weft, nginx, nginx, weft, ...), so neither always
// follows the other.
func (e *env) phase(ctx context.Context, n, rounds, seconds int) *phase {
	e.startNginx(ctx, n)
	last := n - 1 // the route asked for: the last made
	check(e.waitServed(ctx, e.weftIP, last))
	check(e.waitServed(ctx, e.nginxIP, last))
	e.wrk(ctx, e.weftIP, last, 2)
	e.wrk(ctx, e.nginxIP, last, 2)
	ph := &phase{routes: n}
	for r := 0; r < rounds; r++ {
		fmt.Fprintf(os.Stderr, "%d routes: round %d\n", n, r+1)
		weft := func() {
			rps, p99 := e.wrk(ctx, e.weftIP, last, seconds)
			ph.weftRPS.Add(rps)
			ph.weftP99.Add(p99)
		}
		nginx := func() {
			rps, p99 := e.wrk(ctx, e.nginxIP, last, seconds)
			ph.nginxRPS.Add(rps)
			ph.nginxP99.Add(p99)
		}
		if r%2 == 0 {
			weft()
			nginx()
		} else {
			nginx()
			weft()
		}
	}
	return ph
}

func (e *env) waitServed(ctx context.Context, addr string, route int) error {
	_, err := e.inClient(ctx, 3*time.Minute, filepath.Join(binDir, "weft"), "testserver", "until-ok", "http://"+addr+"/hostname",
		"--host", host(route), "--for", "150s", "--every", "100ms")
	return err
}

// propagation creates one more Ingress at a time and times, from the
// create call, the first 200 for its host through weft ingress.
func (e *env) propagation(ctx context.Context, rounds int) ([]float64, error) {
	var ms []float64
	prefix := networkingv1.PathTypePrefix
	for r := 0; r < rounds; r++ {
		took, _, err := e.arrival(ctx, e.weftIP, fmt.Sprintf("new-%d", r), func(name, h string) error {
			ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
				Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("weft"), Rules: []networkingv1.IngressRule{{Host: h,
					IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{
						Path: "/", PathType: &prefix, Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
							Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}}}}}}}}}}
			_, err := e.client.NetworkingV1().Ingresses(ns).Create(ctx, ing, metav1.CreateOptions{})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("propagation round %d: %v", r+1, err)
		}
		ms = append(ms, took)
	}
	return ms, nil
}

// arrival times one new route: a prober in the client pod asks addr for
// the route's host every 1 ms; create makes the route (named name, for
// host name.example.com); the figure is from create's call to the first
// 200, and create's own time. A prober that began asking only after the
// call (a slow process start on a loaded machine) timed its own start,
// not the route: that try is made again with a new name, at most 4 times.
func (e *env) arrival(ctx context.Context, addr, name string, create func(name, host string) error) (ms, createMs float64, err error) {
	for try := 0; try < 5; try++ {
		n := name
		if try > 0 {
			n = fmt.Sprintf("%s-again%d", name, try)
		}
		h := n + ".example.com"
		done := make(chan struct{})
		var out string
		var perr error
		go func() {
			defer close(done)
			out, perr = e.inClient(ctx, 20*time.Second, filepath.Join(binDir, "weft"), "testserver", "until-ok", "http://"+addr+"/hostname",
				"--host", h, "--for", "10s", "--every", "1ms")
		}()
		time.Sleep(500 * time.Millisecond) // the prober is asking
		start := time.Now()
		check(create(n, h))
		createMs = float64(time.Since(start).Microseconds()) / 1000
		<-done
		var res testserver.UntilOKResult
		if perr == nil {
			perr = json.Unmarshal([]byte(out), &res)
		}
		if perr != nil {
			return 0, 0, perr
		}
		if res.First > start.UnixNano() {
			fmt.Fprintf(os.Stderr, "%s: the prober began %.0f ms after the create call; timed again\n", n, float64(res.First-start.UnixNano())/1e6)
			continue
		}
		return float64(res.At-start.UnixNano()) / 1e6, createMs, nil
	}
	return 0, 0, fmt.Errorf("%s: the prober began after the create call in 5 tries", name)
}

func report(one, many *phase, rounds, seconds, props int) {
	fmt.Println("### Ingress: weft ingress beside nginx")
	fmt.Println()
	fmt.Printf("`go run ./bench/ingress -bin bin` (part of `make bench`), %s. ", figure.Stamp())
	fmt.Printf("One lab: weft ingress (one replica, installed by the manifests) and nginx %s (Debian package, run in an empty pod's network namespace) on %s; ", nginxVersion(), proxyNode)
	fmt.Printf("the backend (weft testserver) and the load generator on %s. nginx is configured as an ingress controller would be: a server block per host, "+
		"the backend pod as upstream with keep-alive (weft ingress also sends to endpoints directly, with keep-alive), the forwarding headers weft ingress sends (X-Forwarded-For, -Host, -Proto), access log on, one worker per CPU. ", otherNode)
	fmt.Printf("Routes: hosts in Ingresses of five; the host asked for is the last one made; the rounds begin once weft has written every Ingress's status. "+
		"Load: wrk, 2 threads, 32 keep-alive connections, GET /hostname, %d rounds of %d s alternating the proxies after a warm-up (weft first in odd rounds, nginx in even ones); medians with the interquartile range. ", rounds, seconds)
	fmt.Printf("Propagation: %d Ingresses created one by one at %d routes, a prober in the client pod asking for the new host every 1 ms; from the create call to the first 200 (a round whose prober began asking only after the call is timed again with a new route). RSS from /proc (nginx: master and workers).\n\n", props, many.routes)
	fmt.Println("| routes | weft req/s (IQR) | nginx req/s (IQR) | weft/nginx | weft p99 (IQR) | nginx p99 (IQR) | p99 weft/nginx |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- |")
	for _, ph := range []*phase{one, many} {
		fmt.Printf("| %d | %s (%s) | %s (%s) | %s | %s µs (%s) | %s µs (%s) | %s |\n", ph.routes,
			ph.weftRPS.Median().Format("%.0f"), ph.weftRPS.Spread("%.0f"), ph.nginxRPS.Median().Format("%.0f"), ph.nginxRPS.Spread("%.0f"),
			figure.Div(ph.weftRPS.Median(), ph.nginxRPS.Median()).Format("%.2f"),
			ph.weftP99.Median().Format("%.0f"), ph.weftP99.Spread("%.0f"), ph.nginxP99.Median().Format("%.0f"), ph.nginxP99.Spread("%.0f"),
			figure.Div(ph.weftP99.Median(), ph.nginxP99.Median()).Format("%.2f"))
	}
	p50, p99 := quantiles(many.propagation, many.propagationErr)
	fmt.Println()
	fmt.Printf("| at %d routes | propagation p50 | p99 | weft ingress RSS | nginx RSS |\n| --- | --- | --- | --- | --- |\n", many.routes)
	fmt.Printf("| | %s ms | %s ms | %s MiB | %s MiB |\n\n", p50.Format("%.1f"), p99.Format("%.1f"), many.weftRSS.Format("%.0f"), many.nginxRSS.Format("%.0f"))
	for _, ph := range []*phase{one, many} {
		fmt.Printf("Targets at %d route(s): requests/s ≥ 1.0× nginx: %s; p99 no worse than nginx: %s. ", ph.routes,
			figure.Div(ph.weftRPS.Median(), ph.nginxRPS.Median()).Verdict(func(x float64) bool { return x >= 1.0 }),
			figure.Div(ph.weftP99.Median(), ph.nginxP99.Median()).Verdict(func(x float64) bool { return x <= 1.0 }))
	}
	fmt.Printf("Propagation p99 ≤ 100 ms: %s. Memory ≤ 150 MiB: %s.\n",
		p99.Verdict(func(x float64) bool { return x <= 100 }), many.weftRSS.Verdict(func(x float64) bool { return x <= 150 }))
}

// quantiles are the p50 and p99 (nearest rank) of ms.
func quantiles(ms []float64, err error) (figure.Figure, figure.Figure) {
	if err == nil && len(ms) == 0 {
		err = fmt.Errorf("no propagation rounds")
	}
	if err != nil {
		return figure.Figure{Err: err}, figure.Figure{Err: err}
	}
	s := append([]float64(nil), ms...)
	sort.Float64s(s)
	at := func(q float64) figure.Figure {
		i := int(q*float64(len(s))+0.5) - 1
		return figure.Of(s[max(0, min(i, len(s)-1))], nil)
	}
	return at(0.5), at(0.99)
}

func nginxVersion() string {
	out, err := exec.Command("nginx", "-v").CombinedOutput()
	if err != nil {
		return "(version unknown)"
	}
	return strings.TrimSpace(strings.TrimPrefix(string(out), "nginx version: nginx/"))
}
