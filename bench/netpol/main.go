// Command netpol measures NetworkPolicy in the lab, with the policies as
// a user's cluster would hold them: over at least 300 pods, first with one
// policy, then with 1,000 more. Per phase: policy create → enforced on
// every node (each node's client pod, probing every 5 ms, sees its
// connection blocked), one pod label change → enforced, the extra CNI ADD
// latency of the closed-start wait (ADDs with and without it, interleaved),
// pod-to-pod throughput and TCP RR against the same pair with no policy,
// and the agent's memory. It prints a Markdown section; a figure that
// fails prints FAILED.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
	npaclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"
	npav1beta1 "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned/typed/apis/v1beta1"

	"weft.dev/weft/bench/internal/figure"
	"weft.dev/weft/internal/lab"
	"weft.dev/weft/internal/testserver"
)

const benchNS = "bench-np"

var (
	binDir  string
	nodes   = []string{"weft-node-1", "weft-node-2", "weft-node-3"}
	server  = "weft-node-1" // the server pod's node
	seconds = 3
)

// phase is one measured state of the cluster.
type phase struct {
	name                string
	enforce, label      []float64     // seconds
	addWith, addWithout figure.Rounds // ms
	gbps, rr            figure.Rounds // the pod pair with a policy: Gbit/s, µs
	rss                 figure.Figure
	syncMillis          figure.Figure
	// While the throughput rounds ran (the policy's create and delete
	// between them not counted): every agent's CPU, in % of one CPU, and
	// table writes on the server's node.
	agentCPU, syncs figure.Figure
	// cnpEnforce: an admin ClusterNetworkPolicy's create → enforced
	// (phase three only).
	cnpEnforce []float64
}

func main() {
	defer figure.Exit()
	flag.StringVar(&binDir, "bin", "bin", "directory with weft and weft-cni")
	npods := flag.Int("pods", 300, "filler pods")
	npol := flag.Int("policies", 1000, "policies of the second phase")
	rounds := flag.Int("rounds", 10, "policy creates (and label changes) timed per phase")
	adds := flag.Int("adds", 20, "CNI ADDs per side per phase")
	ncnp := flag.Int("cluster-policies", 100, "ClusterNetworkPolicies of the third phase")
	flag.Parse()
	binDir, _ = filepath.Abs(binDir)
	l := lab.New(lab.DefaultStateDir, lab.DefaultCacheDir, binDir, os.Stderr)
	defer l.Down()
	ctx := context.Background()
	check(l.Up(ctx, lab.UpOptions{Workers: 3, Racks: 2, Backend: "vxlan"}))
	client, err := l.Client()
	check(err)
	check(setup(ctx, client, *npods))
	ips := podIPs(ctx, client)
	stopServers := startServers(ips)
	defer stopServers()

	var baseline [2]figure.Rounds // no policy at all: in phase one and after the last
	one := measure(ctx, l, client, ips, "1 policy", *rounds, *adds, &baseline)
	fmt.Fprintf(os.Stderr, "creating %d policies\n", *npol)
	check(createPolicies(ctx, client, *npol))
	time.Sleep(5 * time.Second) // every agent has written them
	many := measure(ctx, l, client, ips, fmt.Sprintf("%d policies", *npol+1), *rounds, *adds, nil)
	fmt.Fprintf(os.Stderr, "creating %d cluster policies\n", *ncnp)
	cfg, err := clientcmd.BuildConfigFromFlags("", l.Kubeconfig())
	check(err)
	cnps := npaclient.NewForConfigOrDie(cfg).PolicyV1beta1().ClusterNetworkPolicies()
	check(createClusterPolicies(ctx, cnps, *ncnp))
	time.Sleep(5 * time.Second)
	tiers := measure(ctx, l, client, ips, fmt.Sprintf("%d policies + %d cluster policies", *npol+1, *ncnp), *rounds, *adds, nil)
	fmt.Fprintf(os.Stderr, "phase %s: cluster policy create → enforced\n", tiers.name)
	for r := 0; r < *rounds; r++ {
		lat, err := cnpEnforceRound(ctx, cnps, ips)
		if err != nil {
			tiers.cnpEnforce = nil
			fmt.Fprintln(os.Stderr, err)
			break
		}
		tiers.cnpEnforce = append(tiers.cnpEnforce, lat...)
	}
	// No policy at all once more, every policy deleted: phases two and
	// three ran minutes after phase one, so the baseline brackets them.
	fmt.Fprintln(os.Stderr, "no policy at all, again")
	check(client.NetworkingV1().NetworkPolicies(benchNS).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}))
	check(cnps.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}))
	time.Sleep(5 * time.Second) // every agent has written its table without them
	for r := 0; r < *rounds; r++ {
		throughput(ips, &baseline[0], &baseline[1])
	}
	report(*npods, *npol, *ncnp, *rounds, *adds, baseline, []*phase{one, many, tiers})
}

// setup makes the namespace, the filler pods (pause, spread over the nodes
// in 20 label groups), a server on weft-node-1 and a client per node.
func setup(ctx context.Context, client kubernetes.Interface, n int) error {
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNS}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	time.Sleep(time.Second) // the default ServiceAccount
	pod := func(name, node, image string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNS, Labels: labels},
			Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: ptr.To[int64](1),
				Containers: []corev1.Container{{Name: "c", Image: image}}}}
	}
	var pods []*corev1.Pod
	for i := 0; i < n; i++ {
		pods = append(pods, pod(fmt.Sprintf("filler-%d", i), nodes[i%len(nodes)], "pause", map[string]string{"app": "filler", "group": fmt.Sprintf("g%d", i%20)}))
	}
	pods = append(pods, pod("server", server, "weft/testserver", map[string]string{"role": "server"}))
	for _, node := range nodes {
		pods = append(pods, pod("client-"+node, node, "weft/testserver", map[string]string{"role": "client", "allowed": "yes"}))
	}
	for _, p := range pods {
		if _, err := client.CoreV1().Pods(benchNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		list, err := client.CoreV1().Pods(benchNS).List(ctx, metav1.ListOptions{})
		if err == nil {
			running := 0
			for _, p := range list.Items {
				if p.Status.PodIP != "" && p.Status.Phase == corev1.PodRunning {
					running++
				}
			}
			if running == len(pods) {
				return nil
			}
			fmt.Fprintf(os.Stderr, "%d/%d pods running\n", running, len(pods))
		}
		time.Sleep(5 * time.Second)
	}
	return fmt.Errorf("pods not running after 10 minutes")
}

func podIPs(ctx context.Context, client kubernetes.Interface) map[string]string {
	list, err := client.CoreV1().Pods(benchNS).List(ctx, metav1.ListOptions{LabelSelector: "role"})
	check(err)
	out := map[string]string{}
	for _, p := range list.Items {
		out[p.Name] = p.Status.PodIP
	}
	return out
}

// startServers runs an iperf3 server in the server pod.
func startServers(ips map[string]string) func() {
	c := exec.Command(filepath.Join(binDir, "weft"), "lab", "exec", benchNS+"/server", "--", "iperf3", "-s", "-p", "5302")
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	check(c.Start())
	time.Sleep(time.Second)
	return func() { _ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
}

// measure runs every figure of one phase.
// With baseline given, each datapath round with the policy follows one
// without any (the policy deleted), recorded there.
func measure(ctx context.Context, l *lab.Lab, client kubernetes.Interface, ips map[string]string, name string, rounds, adds int, baseline *[2]figure.Rounds) *phase {
	p := &phase{name: name}
	fmt.Fprintf(os.Stderr, "phase %s: policy create → enforced\n", name)
	for r := 0; r < rounds; r++ {
		lat, err := enforceRound(ctx, client, ips)
		if err != nil {
			p.enforce = nil
			p.rss = figure.Missing("enforcement round: %v", err)
			fmt.Fprintln(os.Stderr, err)
			break
		}
		p.enforce = append(p.enforce, lat...)
	}
	fmt.Fprintf(os.Stderr, "phase %s: label change → enforced\n", name)
	p.label = labelRounds(ctx, client, ips, rounds)
	fmt.Fprintf(os.Stderr, "phase %s: CNI ADD\n", name)
	p.addWith, p.addWithout = cniAdds(ctx, client, adds)
	fmt.Fprintf(os.Stderr, "phase %s: throughput and RR\n", name)
	// The server selected by a policy that lets the client in: its packets
	// walk the policy on every one.
	allow := policy("bench-allow-client", map[string]string{"role": "server"})
	allow.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}}}}
	var busy, wall time.Duration
	var writes float64
	var usage error
	for r := 0; r < rounds; r++ {
		if baseline != nil {
			throughput(ips, &baseline[0], &baseline[1])
		}
		_, err := client.NetworkingV1().NetworkPolicies(benchNS).Create(ctx, allow, metav1.CreateOptions{})
		check(err)
		time.Sleep(time.Second)
		cpu0, n0, start := agentsCPU(l), syncCount(), time.Now()
		throughput(ips, &p.gbps, &p.rr)
		cpu1, n1 := agentsCPU(l), syncCount()
		if err := errors.Join(cpu0.err, cpu1.err, n0.err, n1.err); err != nil {
			usage = err
		}
		busy, wall, writes = busy+cpu1.v-cpu0.v, wall+time.Since(start), writes+n1.f-n0.f
		check(client.NetworkingV1().NetworkPolicies(benchNS).Delete(ctx, allow.Name, metav1.DeleteOptions{}))
		time.Sleep(time.Second)
	}
	p.agentCPU, p.syncs = figure.Of(100*busy.Seconds()/wall.Seconds(), usage), figure.Of(writes, usage)
	p.rss = agentRSS(l)
	p.syncMillis = syncDuration()
	return p
}

func policy(name string, target map[string]string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: name},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: target}}}
}

// enforceRound creates a policy that cuts every client's egress to the
// server and returns, per node, the time from the create call to the
// client's first blocked connection; then deletes it and waits for the
// clients to get through again.
func enforceRound(ctx context.Context, client kubernetes.Interface, ips map[string]string) ([]float64, error) {
	p := policy("bench-cut", map[string]string{"role": "client"})
	p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "nobody"}}}}}}
	var pods []string
	for _, n := range nodes {
		pods = append(pods, "client-"+n)
	}
	results := watchAll(pods, ips["server"]+":8080", "blocked", func() { _, _ = client.NetworkingV1().NetworkPolicies(benchNS).Create(ctx, p, metav1.CreateOptions{}) })
	_ = client.NetworkingV1().NetworkPolicies(benchNS).Delete(ctx, p.Name, metav1.DeleteOptions{})
	_ = watchAll(pods, ips["server"]+":8080", "open", func() {})
	return results.latencies()
}

// cnpEnforceRound is enforceRound with an admin ClusterNetworkPolicy
// denying the clients' egress to the server.
func cnpEnforceRound(ctx context.Context, cnps npav1beta1.ClusterNetworkPolicyInterface, ips map[string]string) ([]float64, error) {
	p := &cnp.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "bench-cut"},
		Spec: cnp.ClusterNetworkPolicySpec{Tier: cnp.AdminTier, Priority: 0,
			Subject: cnp.ClusterNetworkPolicySubject{Pods: &cnp.NamespacedPod{NamespaceSelector: benchNamespace(),
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}},
			Egress: []cnp.ClusterNetworkPolicyEgressRule{{Action: cnp.ClusterNetworkPolicyRuleActionDeny,
				To: []cnp.ClusterNetworkPolicyEgressPeer{{Pods: &cnp.NamespacedPod{NamespaceSelector: benchNamespace(),
					PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "server"}}}}}}}}}
	var pods []string
	for _, n := range nodes {
		pods = append(pods, "client-"+n)
	}
	results := watchAll(pods, ips["server"]+":8080", "blocked", func() { _, _ = cnps.Create(ctx, p, metav1.CreateOptions{}) })
	_ = cnps.Delete(ctx, p.Name, metav1.DeleteOptions{})
	_ = watchAll(pods, ips["server"]+":8080", "open", func() {})
	return results.latencies()
}

func benchNamespace() metav1.LabelSelector {
	return metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: benchNS}}
}

// createClusterPolicies adds n cluster policies like an admin's, half in
// each tier: each selects one filler group and denies (admin) or accepts
// (baseline) another group on a port; none touches the measured pods.
func createClusterPolicies(ctx context.Context, cnps npav1beta1.ClusterNetworkPolicyInterface, n int) error {
	group := func(i int) cnp.NamespacedPod {
		return cnp.NamespacedPod{NamespaceSelector: benchNamespace(),
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"group": fmt.Sprintf("g%d", i%20)}}}
	}
	for i := 0; i < n; i++ {
		tier, action := cnp.AdminTier, cnp.ClusterNetworkPolicyRuleActionDeny
		if i%2 == 1 {
			tier, action = cnp.BaselineTier, cnp.ClusterNetworkPolicyRuleActionAccept
		}
		subject := group(i)
		peer := group(i + 1)
		p := &cnp.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("admin-%d", i)},
			Spec: cnp.ClusterNetworkPolicySpec{Tier: tier, Priority: int32(1 + i),
				Subject: cnp.ClusterNetworkPolicySubject{Pods: &subject},
				Ingress: []cnp.ClusterNetworkPolicyIngressRule{{Action: action, From: []cnp.ClusterNetworkPolicyIngressPeer{{Pods: &peer}},
					Protocols: []cnp.ClusterNetworkPolicyProtocol{{TCP: &cnp.ClusterNetworkPolicyProtocolTCP{DestinationPort: &cnp.Port{Number: int32(9000 + i%100)}}}}}}}}
		if _, err := cnps.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// labelRounds removes the client label a policy on the server allows
// (enforced on the server's node, a peer set element) and times the
// remote client's first blocked connection; then puts it back.
func labelRounds(ctx context.Context, client kubernetes.Interface, ips map[string]string, rounds int) []float64 {
	p := policy("bench-allowed-label", map[string]string{"role": "server"})
	p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"allowed": "yes"}}}}}}
	_, err := client.NetworkingV1().NetworkPolicies(benchNS).Create(ctx, p, metav1.CreateOptions{})
	check(err)
	defer func() { _ = client.NetworkingV1().NetworkPolicies(benchNS).Delete(ctx, p.Name, metav1.DeleteOptions{}) }()
	pod := "client-weft-node-3"
	_ = watchAll([]string{pod}, ips["server"]+":8080", "open", func() {})
	var out []float64
	patch := func(v string) {
		_, err := client.CoreV1().Pods(benchNS).Patch(ctx, pod, types.MergePatchType, []byte(`{"metadata":{"labels":{"allowed":`+v+`}}}`), metav1.PatchOptions{})
		check(err)
	}
	for r := 0; r < rounds; r++ {
		res := watchAll([]string{pod}, ips["server"]+":8080", "blocked", func() { patch("null") })
		lat, err := res.latencies()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return nil
		}
		out = append(out, lat...)
		patch(`"yes"`)
		_ = watchAll([]string{pod}, ips["server"]+":8080", "open", func() {})
	}
	return out
}

type watchResults struct {
	t0   time.Time
	at   []int64
	errs []error
}

func (w watchResults) latencies() ([]float64, error) {
	var out []float64
	for i, at := range w.at {
		if w.errs[i] != nil {
			return nil, w.errs[i]
		}
		out = append(out, time.Unix(0, at).Sub(w.t0).Seconds())
	}
	return out, nil
}

// watchAll starts a watcher in each pod, runs act, and waits for them.
func watchAll(pods []string, addr, until string, act func()) watchResults {
	res := watchResults{at: make([]int64, len(pods)), errs: make([]error, len(pods))}
	var wg sync.WaitGroup
	for i, pod := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := exec.Command(filepath.Join(binDir, "weft"), "lab", "exec", benchNS+"/"+pod, "--",
				filepath.Join(binDir, "weft"), "testserver", "watch", addr, "--until", until, "--for", "20s").Output()
			if err != nil {
				res.errs[i] = fmt.Errorf("watch %s from %s: %v", addr, pod, err)
				return
			}
			var w testserver.WatchResult
			if err := json.Unmarshal(out, &w); err != nil {
				res.errs[i] = err
				return
			}
			res.at[i] = w.At
		}()
	}
	time.Sleep(500 * time.Millisecond) // the watchers run
	res.t0 = time.Now()
	act()
	wg.Wait()
	return res
}

// createPolicies adds n policies like a tenant's: each selects one of the
// 20 filler groups and lets another group in on a port.
func createPolicies(ctx context.Context, client kubernetes.Interface, n int) error {
	tcp := corev1.ProtocolTCP
	for i := 0; i < n; i++ {
		p := policy(fmt.Sprintf("tenant-%d", i), map[string]string{"group": fmt.Sprintf("g%d", i%20)})
		p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"group": fmt.Sprintf("g%d", (i+1)%20)}}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptr.To(intstr.FromInt32(int32(8000 + i%100)))}}}}
		if _, err := client.NetworkingV1().NetworkPolicies(benchNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// throughput adds one round of client→server Gbit/s (iperf3, one stream,
// pinned as bench/podnet pins) and TCP RR p50 in µs.
func throughput(ips map[string]string, gbps, rr *figure.Rounds) {
	o, err := exec.Command(filepath.Join(binDir, "weft"), "lab", "exec", benchNS+"/client-weft-node-3", "--",
		"iperf3", "-c", ips["server"], "-p", "5302", "-t", strconv.Itoa(seconds), "-J", "-A", "0,1").Output()
	err = figure.WithOutput(err, o)
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err == nil {
		err = json.Unmarshal(o, &res)
	}
	gbps.Add(figure.Of(res.End.SumReceived.BitsPerSecond/1e9, err))
	o, err = exec.Command(filepath.Join(binDir, "weft"), "lab", "exec", benchNS+"/client-weft-node-3", "--",
		filepath.Join(binDir, "weft"), "testserver", "tcprr", ips["server"]+":8081", "--count", "2000").CombinedOutput()
	err = figure.WithOutput(err, o)
	var r testserver.RRResult
	if err == nil {
		err = json.Unmarshal(o, &r)
	}
	rr.Add(figure.Of(float64(r.P50)/float64(time.Microsecond), err))
}

// cniAdds times CNI ADD + DEL of a sandbox on weft-node-1 through libcni,
// alternating: with the agent's policy socket in the runtime config and
// with a copy without it. The pod named in CNI_ARGS exists (on no node),
// so the agent answers after one table write.
func cniAdds(ctx context.Context, client kubernetes.Interface, n int) (with, without figure.Rounds) {
	ghost := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bench-add", Namespace: benchNS},
		Spec: corev1.PodSpec{NodeName: "weft-bench-ghost", Containers: []corev1.Container{{Name: "c", Image: "pause"}}}}
	_, _ = client.CoreV1().Pods(benchNS).Create(ctx, ghost, metav1.CreateOptions{})
	defer func() { _ = client.CoreV1().Pods(benchNS).Delete(ctx, ghost.Name, metav1.DeleteOptions{}) }()
	time.Sleep(time.Second)
	adder, err := newAdder(binDir)
	if err != nil {
		with.Add(figure.Missing("CNI set-up: %v", err))
		return with, with
	}
	defer adder.close()
	for i := 0; i < n; i++ {
		with.Add(figure.Of(adder.add(i, true)))
		without.Add(figure.Of(adder.add(i, false)))
	}
	return with, without
}

func agentRSS(l *lab.Lab) figure.Figure {
	pid := l.AgentPID(server)
	if pid == 0 {
		return figure.Missing("no agent runs on %s", server)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return figure.Missing("agent status: %v", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return figure.Of(kb/1024, err)
		}
	}
	return figure.Missing("no VmRSS")
}

// syncDuration is the mean table write of the agent on the server's node,
// from its metrics.
func syncDuration() figure.Figure {
	sum, err := agentMetric("weft_policy_sync_duration_seconds_sum")
	if err != nil {
		return figure.Missing("%v", err)
	}
	n := syncCount()
	if n.err != nil || n.f == 0 {
		return figure.Missing("no policy syncs in the metrics (%v)", n.err)
	}
	return figure.Of(sum/n.f*1000, nil)
}

func pct(v []float64, p float64) figure.Figure {
	if len(v) == 0 {
		return figure.Missing("no samples")
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	i := int(float64(len(s)-1)*p + 0.5)
	return figure.Of(s[i]+1e-9, nil)
}

func report(npods, npol, ncnp, rounds, adds int, baseline [2]figure.Rounds, phases []*phase) {
	fmt.Printf("### NetworkPolicy: enforcement latency, closed-start cost, datapath cost\n\n")
	fmt.Printf("`go run ./bench/netpol -bin bin` (part of `make bench`), %s. Lab of 3 nodes (vxlan), %d pause pods in 20 label groups spread over them, a server pod on %s and a client pod per node. ", figure.Stamp(), npods, server)
	fmt.Printf("Phase one holds only the measured policy; phase two adds %d tenant policies (each selects a group and lets another group in on a port), all compiled on every node; phase three adds %d ClusterNetworkPolicies (half Admin Deny, half Baseline Accept, each between two groups on a port) and also times an admin ClusterNetworkPolicy that cuts the clients off, as the NetworkPolicy is. ", npol, ncnp)
	fmt.Printf("Enforced: each client probes the server every 5 ms (`weft testserver watch`); the time from the create call of an egress policy that cuts every client off to each client's first blocked attempt, %d rounds × 3 nodes (as ClusterLoader2's NetworkPolicyEnforcementLatency). ", rounds)
	fmt.Printf("Label change: the label a server policy allows removed from the client on weft-node-3; the time to its first blocked attempt, %d rounds. ", rounds)
	fmt.Printf("CNI ADD: weft-cni ADD+DEL on weft-node-1 through libcni, %d with the closed-start wait and %d without, interleaved. ", adds, adds)
	fmt.Printf("Datapath: iperf3 (%d s, one stream, pinned) and TCP RR p50 client on weft-node-3 → server, with the server selected by a policy allowing the client, as a ratio to the same pair with no policy at all (%d rounds each; no policy at all: %d rounds, alternating with phase one's and again after the last phase with every policy deleted, so the baseline brackets the phases and the machine's drift over the minutes between them). Agents' CPU: the user and system time of the four nodes' agents while the rounds with the policy ran, in %% of one CPU; table writes: the server node's policy table writes in that time.\n\n", seconds, rounds, baseline[0].Len())
	fmt.Printf("No policy at all: %s Gbit/s (IQR %s), TCP RR p50 %s µs (IQR %s).\n\n", baseline[0].Median().Format("%.2f"), baseline[0].Spread("%.2f"),
		baseline[1].Median().Format("%.0f"), baseline[1].Spread("%.0f"))
	fmt.Println("| phase | create → enforced p50 | p99 | label change → enforced p50 | p99 | CNI ADD+DEL with wait (IQR) | without (IQR) | extra | Gbit/s with policy (IQR) | policy/none | TCP RR p50 with policy (IQR) | none/policy | agent RSS | table write (mean) | agents' CPU in the rounds | table writes in the rounds |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, p := range phases {
		fmt.Printf("| %s | %s | %s | %s | %s | %s ms (%s) | %s ms (%s) | %s ms | %s (%s) | %s | %s µs (%s) | %s | %s | %s | %s | %s |\n", p.name,
			pct(p.enforce, 0.5).Format("%.3f s"), pct(p.enforce, 0.99).Format("%.3f s"),
			pct(p.label, 0.5).Format("%.3f s"), pct(p.label, 0.99).Format("%.3f s"),
			p.addWith.Median().Format("%.1f"), p.addWith.Spread("%.1f"), p.addWithout.Median().Format("%.1f"), p.addWithout.Spread("%.1f"),
			extra(p).Format("%.1f"),
			p.gbps.Median().Format("%.2f"), p.gbps.Spread("%.2f"), figure.Div(p.gbps.Median(), baseline[0].Median()).Format("%.3f"),
			p.rr.Median().Format("%.0f"), p.rr.Spread("%.0f"), figure.Div(baseline[1].Median(), p.rr.Median()).Format("%.3f"),
			p.rss.Format("%.0f MiB"), p.syncMillis.Format("%.1f ms"), p.agentCPU.Format("%.1f %%"), p.syncs.Format("%.0f"))
	}
	many, tiers := phases[1], phases[2]
	fmt.Println()
	fmt.Printf("Admin ClusterNetworkPolicy create → enforced with %d policies + %d cluster policies: p50 %s, p99 %s (%d samples).\n\n", npol+1, ncnp,
		pct(tiers.cnpEnforce, 0.5).Format("%.3f s"), pct(tiers.cnpEnforce, 0.99).Format("%.3f s"), len(tiers.cnpEnforce))
	fmt.Printf("- p99 create → enforced at %d policies ≤ 1 s: %s.\n", npol+1, pct(many.enforce, 0.99).Verdict(func(x float64) bool { return x <= 1 }))
	fmt.Printf("- p99 create → enforced with %d cluster policies ≤ 1 s: NetworkPolicy %s, ClusterNetworkPolicy %s.\n", ncnp,
		pct(tiers.enforce, 0.99).Verdict(func(x float64) bool { return x <= 1 }), pct(tiers.cnpEnforce, 0.99).Verdict(func(x float64) bool { return x <= 1 }))
	fmt.Printf("- throughput with %d policies + %d cluster policies / none ≥ 0.95: %s.\n", npol+1, ncnp, figure.Div(tiers.gbps.Median(), baseline[0].Median()).Verdict(func(x float64) bool { return x >= 0.95 }))
	fmt.Printf("- throughput with %d policies / none ≥ 0.95: %s.\n", npol+1, figure.Div(many.gbps.Median(), baseline[0].Median()).Verdict(func(x float64) bool { return x >= 0.95 }))
	fmt.Printf("- the closed-start wait adds ≤ 20 ms to ADD's median: %s (1 policy), %s (%d policies).\n\n",
		extra(phases[0]).Verdict(func(x float64) bool { return x <= 20 }), extra(many).Verdict(func(x float64) bool { return x <= 20 }), npol+1)
}

// extra is the median ADD with the wait minus the median without; below
// the noise it can come out negative.
func extra(p *phase) figure.Figure {
	a, b := p.addWith.Median(), p.addWithout.Median()
	if !a.OK() || !b.OK() {
		return figure.Missing("ADD medians missing")
	}
	return figure.Signed(a.Value-b.Value, nil)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench netpol:", err)
		os.Exit(1)
	}
}
