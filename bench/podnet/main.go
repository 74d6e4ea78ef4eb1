// Command podnet measures the pod network across nodes for each backend,
// round by round beside node-to-node over the same underlay and beside a
// bare kernel set-up of the same shape without weft (bare.go): iperf3
// throughput (1 and 4 streams), TCP request/response latency, and the time
// from a new node Ready to its pod being reachable. It brings up its own
// labs and prints a Markdown section; a run that fails prints FAILED and
// exits 1.
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
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"weft.dev/weft/bench/internal/figure"
	"weft.dev/weft/internal/lab"
	"weft.dev/weft/internal/testserver"
)

// row is one backend and node pair: per-round samples, Gbit/s and µs.
type row struct {
	backend, pair string
	crossRack     bool
	// Per stream count (1, 4): node→node and pod→pod in the lab, the same
	// on the bare set-up, pod/node in each, and weft's ratio over bare's.
	node, pod, bareNode, barePod, ratio, bareRatio, rel [2]figure.Rounds
	// The bare pod→pod run again with conntrack and NAT hooks loaded:
	// floor = that / bare pod→pod; relCT = weft's ratio over it.
	barePodCT, floor, relCT [2]figure.Rounds
	nodeRR, podRR, rrRatio  figure.Rounds // p50 µs
	readyToReachable        figure.Figure // seconds
	// fast: what the fast path did during the rounds (fastpath.go).
	fast string
	// With NetworkPolicies selecting the server (policies.go); nil: not run.
	pol *policyPhase
}

var streamCounts = [2]int{1, 4}

// iperfRun is one of a round's runs: weft node→node, weft pod→pod, bare
// node→node, bare pod→pod.
type iperfRun struct {
	from, host, port string
	got              *[2]figure.Rounds
}

// pinnedCPUs is iperf3's -A "client,server": the sender on CPU 0, the
// receiver on CPU 1. In the lab both "nodes" share this machine's CPUs; left
// to the scheduler, the receiver is sometimes woken onto the sender's CPU
// and the figure of the same path swings by ±8 % between runs (0.78–0.89 on
// the bare kernel VXLAN set-up). Two real nodes never share a CPU, so the
// pinned figure is the closer model, for weft and bare alike.
const pinnedCPUs = "0,1"

var (
	binDir  string
	router  string
	seconds int
	rounds  int
	// The phase with NetworkPolicies selecting the server.
	policies, policyRounds int
)

func main() {
	// Registered first, so it runs last: after every cleanup below.
	defer figure.Exit()
	flag.StringVar(&binDir, "bin", "bin", "directory with weft and weft-cni")
	flag.IntVar(&seconds, "seconds", 3, "iperf3 run length")
	flag.IntVar(&rounds, "rounds", 10, "rounds; each alternates weft node, weft pod, bare node and bare pod runs")
	backends := flag.String("backends", "host-gw,vxlan,auto,bgp", "backends to measure")
	flag.StringVar(&router, "router", "bird", "the racks' router with backend bgp: bird or frr")
	flag.IntVar(&policies, "policies", 1000, "NetworkPolicies selecting the server pod in the phase after the rounds (0: no such phase)")
	flag.IntVar(&policyRounds, "policy-rounds", 6, "rounds with the policies in place")
	flag.Parse()
	binDir, _ = filepath.Abs(binDir)
	l := lab.New(lab.DefaultStateDir, lab.DefaultCacheDir, binDir, os.Stderr)
	defer l.Down()
	var rows []row
	for _, b := range strings.Split(*backends, ",") {
		rs, err := measure(l, b)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", b, err)
			l.Down()
			os.Exit(1)
		}
		rows = append(rows, rs...)
	}
	report(rows, *backends)
}

func report(rows []row, backends string) {
	fmt.Printf("### Pod network across nodes, per backend, against the bare kernel\n\n")
	fmt.Printf("`go run ./bench/podnet -bin bin -backends %s -rounds %d -seconds %d -policies %d -policy-rounds %d` (part of `make bench`), %s. ", backends, rounds, seconds, policies, policyRounds, figure.Stamp())
	fmt.Printf("Lab: 3 workers in 2 racks: weft-node-1 and weft-node-2 share rack a, weft-node-3 is in rack b behind the router namespace (auto uses VXLAN there). ")
	fmt.Printf("Bare: the same underlay shape built beside the lab without weft (rack bridges in a router namespace, routed-veth pods, a plain kernel VXLAN device with static entries, MTU 1450; for host-gw plain routes via the peer node, for bgp plain routes via the peer node in a rack and via the router across (the router with a static route per pod CIDR), MTU 1500; no nftables, conntrack or agent), the same pair of racks, so a router hop is in both or neither. ")
	fmt.Printf("Each round runs iperf3 (%d s) weft node→node, weft pod→pod, bare node→node, bare pod→pod, for 1 and then 4 streams, client on CPU 0 and server on CPU 1 (`-A %s`: two real nodes never share a CPU). ", seconds, pinnedCPUs)
	fmt.Printf("Ratios are per round; shown: median and interquartile range over %d rounds. weft/bare = (weft pod/node) ÷ (bare pod/node): what weft costs beyond the kernel device. Conntrack floor: the bare pod→pod run again, in the same round, with conntrack, a forward filter and NAT hooks loaded in the bare nodes (what kube-proxy, Flannel or Calico's iptables mode all carry), over bare pod→pod: what any conntrack-based datapath costs; weft/(bare+ct) = weft's pod/node over that set-up's: what weft's own rules cost. TCP RR: 64-byte request/response, 2000 round trips per round, p50.\n\n", rounds)
	fmt.Println("| backend | pair | streams | weft node→node | weft pod→pod | weft pod/node | bare pod/node | weft/bare (IQR) | conntrack floor (IQR) | weft/(bare+ct) (IQR) |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, r := range rows {
		for i, n := range streamCounts {
			bareRatio, rel := r.bareRatio[i].Median().Format("%.2f"), r.rel[i].Median().Format("%.2f")+" ("+r.rel[i].Spread("%.2f")+")"
			floor := r.floor[i].Median().Format("%.2f") + " (" + r.floor[i].Spread("%.2f") + ")"
			relCT := r.relCT[i].Median().Format("%.2f") + " (" + r.relCT[i].Spread("%.2f") + ")"
			fmt.Printf("| %s | %s | %d | %s Gbit/s | %s Gbit/s | %s (%s) | %s | %s | %s | %s |\n", r.backend, r.pair, n,
				r.node[i].Median().Format("%.2f"), r.pod[i].Median().Format("%.2f"), r.ratio[i].Median().Format("%.2f"), r.ratio[i].Spread("%.2f"), bareRatio, rel, floor, relCT)
		}
	}
	fmt.Println()
	for _, r := range rows {
		fmt.Printf("- %s, %s: %s\n", r.backend, r.pair, r.fast)
	}
	fmt.Println()
	reportPolicies(rows)
	fmt.Println("| backend | pair | TCP RR node p50 | TCP RR pod p50 | pod/node (IQR) | new node Ready → pod reachable |")
	fmt.Println("| --- | --- | --- | --- | --- | --- |")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %s µs | %s µs | %s (%s) | %s |\n", r.backend, r.pair, r.nodeRR.Median().Format("%.0f"), r.podRR.Median().Format("%.0f"),
			r.rrRatio.Median().Format("%.2f"), r.rrRatio.Spread("%.2f"), r.readyToReachable.Format("%.2f s"))
	}
	fmt.Println()
	for _, r := range rows {
		for i, n := range streamCounts {
			if r.backend == "host-gw" || r.backend == "bgp" {
				fmt.Printf("- %s, %s, %d stream(s): pod/node ≥ 0.95: %s (bare routes: %s; weft/bare %s; conntrack floor %s).\n", r.backend, r.pair, n,
					r.ratio[i].Median().Judge("%.3f", func(x float64) bool { return x >= 0.95 }), r.bareRatio[i].Median().Format("%.3f"), r.rel[i].Median().Format("%.3f"), r.floor[i].Median().Format("%.3f"))
				continue
			}
			fmt.Printf("- %s, %s, %d stream(s): weft/bare ≥ 0.95: %s (conntrack floor %s; weft/(bare+ct) %s).\n", r.backend, r.pair, n,
				r.rel[i].Median().Judge("%.3f", func(x float64) bool { return x >= 0.95 }), r.floor[i].Median().Format("%.3f"), r.relCT[i].Median().Format("%.3f"))
		}
	}
	fmt.Println()
}

// measure brings up a lab with backend and measures each pair it applies to.
func measure(l *lab.Lab, backend string) ([]row, error) {
	ctx := context.Background()
	if err := l.Up(ctx, lab.UpOptions{Workers: 3, Racks: 2, Backend: backend, Router: router}); err != nil {
		return nil, err
	}
	client, err := l.Client()
	if err != nil {
		return nil, err
	}
	// After l.Up: bringing a lab up removes every weft-* namespace.
	bx := bare{hostGW: backend == "host-gw", routed: backend == "bgp"}
	if err := bx.up(); err != nil {
		return nil, err
	}
	defer bx.remove()
	targets := map[string][]string{"host-gw": {"weft-node-2"}, "vxlan": {"weft-node-2", "weft-node-3"}, "auto": {"weft-node-3"}, "bgp": {"weft-node-3"}}[backend]
	var rows []row
	for i, b := range targets {
		r, err := measurePair(ctx, l, client, bx, backend, "weft-node-1", b, fmt.Sprintf("bench%d", i))
		if err != nil {
			return nil, err
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func measurePair(ctx context.Context, l *lab.Lab, client kubernetesClient, bx bare, backend, a, b, ns string) (row, error) {
	r := row{backend: backend, pair: a + " → " + b}
	var err error
	st, _ := l.LoadState()
	ips := map[string]string{}
	for _, n := range st.Nodes {
		ips[n.Name] = n.IP.String()
	}
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return r, err
	}
	time.Sleep(time.Second) // default ServiceAccount
	pod := func(name, node string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"bench": "1", "role": name}},
			Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: ptr.To[int64](1),
				Containers: []corev1.Container{{Name: "c", Image: "weft/testserver"}}}}
	}
	for _, p := range []*corev1.Pod{pod("client", a), pod("server", b)} {
		if _, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return r, err
		}
	}
	pods, err := lab.WaitPodsReady(ctx, client, ns, "bench=1", 2, time.Minute)
	if err != nil {
		return r, err
	}
	podIP := map[string]string{}
	for _, p := range pods {
		podIP[p.Name] = p.Status.PodIP
	}
	bareB := 2
	if b == "weft-node-3" {
		bareB, r.crossRack = 3, true
	}
	// iperf3 servers on node b, in the server pod, and on the bare node
	// and pod of the same rack as b.
	servers := [][]string{
		{filepath.Join(binDir, "weft"), "lab", "exec", b, "--", "iperf3", "-s", "-p", "5301"},
		{filepath.Join(binDir, "weft"), "lab", "exec", ns + "/server", "--", "iperf3", "-s", "-p", "5302"},
		{"ip", "netns", "exec", fmt.Sprintf("weft-bx-n%d", bareB), "iperf3", "-s", "-p", "5303"},
		{"ip", "netns", "exec", fmt.Sprintf("weft-bx-p%d", bareB), "iperf3", "-s", "-p", "5304"},
		// An echo server on node b for the RR baseline.
		{filepath.Join(binDir, "weft"), "lab", "exec", b, "--", filepath.Join(binDir, "weft"), "testserver", "--http-port", "18080", "--tcp-port", "18081", "--udp-port", "18081"},
	}
	for _, argv := range servers {
		c := exec.Command(argv[0], argv[1:]...)
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := c.Start(); err != nil {
			return r, err
		}
		defer syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
	}
	time.Sleep(time.Second)

	runs := []iperfRun{
		{"lab:" + a, ips[b], "5301", &r.node},
		{"lab:" + ns + "/client", podIP["server"], "5302", &r.pod},
		{"weft-bx-n1", bareNodeIP(bareB), "5303", &r.bareNode},
		{"weft-bx-p1", barePodIP(bareB), "5304", &r.barePod},
	}
	fastBefore := [2]fastCounts{readFastCounts(a, ips[a]), readFastCounts(b, ips[b])}
	for round := 0; round < rounds; round++ {
		for i, streams := range streamCounts {
			var got [4]figure.Figure
			for k, run := range runs {
				got[k] = iperf(run.from, run.host, run.port, streams)
				run.got[i].Add(got[k])
			}
			weft, bareR := figure.Div(got[1], got[0]), figure.Div(got[3], got[2])
			r.ratio[i].Add(weft)
			r.bareRatio[i].Add(bareR)
			r.rel[i].Add(figure.Div(weft, bareR))
			ct := bareWithConntrack(bx, runs[3].host, runs[3].port, streams)
			r.barePodCT[i].Add(ct)
			r.floor[i].Add(figure.Div(ct, got[3]))
			r.relCT[i].Add(figure.Div(weft, figure.Div(ct, got[2])))
		}
		n, p := rr("lab:"+a, ips[b]+":18081"), rr("lab:"+ns+"/client", podIP["server"]+":8081")
		r.nodeRR.Add(n)
		r.podRR.Add(p)
		r.rrRatio.Add(figure.Div(p, n))
		fmt.Fprintf(os.Stderr, "%s %s round %d: weft/bare 1 stream %s\n", backend, r.pair, round+1, r.rel[0].Median().Format("%.2f"))
	}
	r.fast = fastSummary(a, b, fastBefore, [2]fastCounts{readFastCounts(a, ips[a]), readFastCounts(b, ips[b])})
	if policies > 0 {
		polBefore := [2]fastCounts{readFastCounts(a, ips[a]), readFastCounts(b, ips[b])}
		if r.pol, err = measurePolicies(ctx, client, ns, podIP["server"], a, runs); err != nil {
			return r, err
		}
		r.pol.fast = fastSummary(a, b, polBefore, [2]fastCounts{readFastCounts(a, ips[a]), readFastCounts(b, ips[b])})
	}
	r.readyToReachable = figure.Of(newNodeReachable(ctx, l, client, ns, b))
	return r, nil
}

// bareWithConntrack runs the bare pod→pod iperf3 with the conntrack table
// loaded in the bare nodes.
func bareWithConntrack(bx bare, host, port string, streams int) figure.Figure {
	if err := bx.conntrack(true); err != nil {
		return figure.Missing("%v", err)
	}
	got := iperf("weft-bx-p1", host, port, streams)
	if err := bx.conntrack(false); err != nil {
		return figure.Missing("%v", err)
	}
	return got
}

// iperf runs one iperf3 client in a lab target ("lab:node" or
// "lab:ns/pod") or a bare namespace and returns Gbit/s received.
func iperf(from, host, port string, streams int) figure.Figure {
	argv := []string{"iperf3", "-c", host, "-p", port, "-t", fmt.Sprint(seconds), "-P", fmt.Sprint(streams), "-J", "-A", pinnedCPUs}
	out, err := run(from, argv...)
	if err != nil {
		return figure.Missing("iperf3 %s → %s: %v %s", from, host, err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return figure.Missing("iperf3 %s → %s: %v", from, host, err)
	}
	return figure.Of(res.End.SumReceived.BitsPerSecond/1e9, nil)
}

// rr is the p50 in µs of 2000 TCP round trips.
func rr(from, addr string) figure.Figure {
	out, err := run(from, filepath.Join(binDir, "weft"), "testserver", "tcprr", addr, "--count", "2000")
	if err != nil {
		return figure.Missing("tcprr %s: %v %s", addr, err, out)
	}
	var res testserver.RRResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Count == 0 {
		return figure.Missing("tcprr %s: %v %q", addr, err, out)
	}
	return figure.Of(float64(res.P50)/float64(time.Microsecond), nil)
}

// run runs argv in a lab target ("lab:<target>") or a bare namespace.
func run(from string, argv ...string) (string, error) {
	if t, ok := strings.CutPrefix(from, "lab:"); ok {
		return labExec(t, argv...)
	}
	var out bytes.Buffer
	cmd := exec.Command("ip", append([]string{"netns", "exec", from}, argv...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// newNodeReachable removes node b, pre-creates a pod bound to it, brings
// the node back, and times from the Node's Ready to the pod answering a
// pod on another node.
func newNodeReachable(ctx context.Context, l *lab.Lab, client kubernetesClient, ns, node string) (float64, error) {
	if err := l.KillNodeProcess(node, lab.ProcKubelet, syscall.SIGTERM); err != nil {
		return 0, err
	}
	if err := client.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{}); err != nil {
		return 0, err
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "fresh", Namespace: ns},
		Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{Name: "c", Image: "weft/testserver"}}}}
	if _, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	if err := l.StartNodeProcess(node, lab.ProcKubelet); err != nil {
		return 0, err
	}
	var ready time.Time
	last := "node never Ready" // what the last attempt saw, for the error
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if ready.IsZero() {
			if n, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err == nil {
				for _, c := range n.Status.Conditions {
					if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
						ready = time.Now()
					}
				}
			}
		}
		if !ready.IsZero() {
			got, err := client.CoreV1().Pods(ns).Get(ctx, "fresh", metav1.GetOptions{})
			last = fmt.Sprintf("pod: %v", err)
			if err == nil {
				last = fmt.Sprintf("pod phase %s, IP %q", got.Status.Phase, got.Status.PodIP)
			}
			if err == nil && got.Status.PodIP != "" {
				out, err := labExec(ns+"/client", "curl", "-s", "-m", "1", "http://"+got.Status.PodIP+":8080/hostname")
				if err == nil && strings.TrimSpace(out) == "fresh" {
					return time.Since(ready).Seconds(), nil
				}
				last += fmt.Sprintf("; curl from the client: %v %q", err, strings.TrimSpace(out))
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("pod on re-added node %s not reachable in 90s (last: %s)", node, last)
}

func labExec(target string, argv ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(filepath.Join(binDir, "weft"), append([]string{"lab", "exec", target, "--"}, argv...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}
