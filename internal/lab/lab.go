// Package lab runs weft's local multi-node cluster: the real Kubernetes
// control plane (built from k8s.io/kubernetes in lab/k8s) in a
// control-plane node namespace, lab nodes as network namespaces on one or
// more L2 "racks" joined by a router namespace, and an "outside" namespace.
// Everything it creates is named weft-* so `down` (and the next `up`) can
// find and remove it, also after a crash.
package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"weft.dev/weft/internal/lab/pki"
)

// KubernetesVersion is the control plane the lab runs (lab/k8s/go.mod).
const KubernetesVersion = "v1.37.2"

// Defaults for where the lab lives.
const (
	DefaultStateDir = "/var/lib/weft-lab"
	DefaultCacheDir = "/var/cache/weft-lab"
)

// Lab is a handle on the lab's state directory.
type Lab struct {
	dir      string
	cacheDir string
	binDir   string // holds weft and weft-cni
	out      io.Writer
}

// New returns a handle; binDir is where weft and weft-cni are.
func New(stateDir, cacheDir, binDir string, out io.Writer) *Lab {
	return &Lab{dir: stateDir, cacheDir: cacheDir, binDir: binDir, out: out}
}

// State is what `up` records for later commands.
type State struct {
	Nodes     []Node    `json:"nodes"`
	Racks     int       `json:"racks"`
	Backend   string    `json:"backend"`
	Router    string    `json:"router,omitempty"`
	DualStack bool      `json:"dualStack,omitempty"`
	Started   time.Time `json:"started"`
}

// ControlPlaneBinDir is the cache of built control-plane binaries.
func (l *Lab) ControlPlaneBinDir() string {
	return filepath.Join(l.cacheDir, "k8s-"+KubernetesVersion)
}

// Kubeconfig is the host's admin kubeconfig.
func (l *Lab) Kubeconfig() string { return filepath.Join(l.dir, "admin.kubeconfig") }

// InternalKubeconfig is an admin kubeconfig usable from inside the lab.
func (l *Lab) InternalKubeconfig() string { return filepath.Join(l.dir, "admin-internal.kubeconfig") }

// Dir is the lab's state directory.
func (l *Lab) Dir() string { return l.dir }

func (l *Lab) printf(format string, a ...any) {
	fmt.Fprintf(l.out, format, a...)
}

// LoadState reads the state written by up.
func (l *Lab) LoadState() (*State, error) {
	b, err := os.ReadFile(filepath.Join(l.dir, "lab.json"))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, errNotUp
		}
		return nil, err
	}
	s := &State{}
	return s, json.Unmarshal(b, s)
}

// UpOptions shape the lab.
type UpOptions struct {
	Workers int
	Racks   int
	Backend string // vxlan, host-gw, auto or bgp
	// Router is the racks' BGP router with backend bgp: bird (default) or frr.
	Router string
	// DualStack: nodes, pods and services get IPv6 addresses too.
	DualStack bool
	// Image is the OCI layout of weft's image (default: DefaultImageDir).
	Image string
}

// Up builds the lab and returns once every node is Ready.
func (l *Lab) Up(ctx context.Context, o UpOptions) error {
	start := time.Now()
	cp := l.ControlPlaneBinDir()
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"} {
		if _, err := os.Stat(filepath.Join(cp, b)); err != nil {
			return fmt.Errorf("control plane %s not built in %s (run `make controlplane`): %w", KubernetesVersion, cp, err)
		}
	}
	if o.Image == "" {
		o.Image = l.DefaultImageDir()
	}
	if _, err := os.Stat(filepath.Join(o.Image, "index.json")); err != nil {
		return fmt.Errorf("weft's image: no OCI layout in %s (run `make lab-image`)", o.Image)
	}
	if n := l.Down(); n > 0 {
		l.printf("removed %d leftovers of an earlier lab\n", n)
	}
	for _, d := range []string{"logs", "pids", "pki", "nodes", "etcd"} {
		if err := os.MkdirAll(filepath.Join(l.dir, d), 0o755); err != nil {
			return err
		}
	}
	nodes := Plan(o.Workers, o.Racks)
	if o.DualStack {
		AddIPv6(nodes)
	}
	l.printf("• certificates\n")
	if err := l.writePKI(nodes); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	family := "IPv4"
	if o.DualStack {
		family = "IPv4 and IPv6"
	}
	l.printf("• topology: %d nodes in %d rack(s), router, outside; %s\n", len(nodes), o.Racks, family)
	if err := buildTopology(nodes, o.Racks, o.DualStack); err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	if o.Backend == "bgp" {
		if o.Router == "" {
			o.Router = RouterBIRD
		}
		l.printf("• router: %s, AS %d, a BGP session with each node (AS %d), BFD, graceful restart\n", o.Router, RouterASN, NodeASN)
		if err := l.startRouter(o.Router, nodes, o.Racks); err != nil {
			return fmt.Errorf("router: %w", err)
		}
	} else {
		o.Router = ""
	}
	l.printf("• control plane %s\n", KubernetesVersion)
	if err := l.startControlPlane(ctx, o.DualStack); err != nil {
		return err
	}
	client, err := l.Client()
	if err != nil {
		return err
	}
	if o.Backend == "" {
		o.Backend = "auto"
	}
	if err := registerControlPlane(ctx, client); err != nil {
		return err
	}
	l.printf("• nodes: a lab node (kubelet) in each, no network until weft is installed\n")
	for _, n := range nodes {
		if err := l.prepareNodeRoot(n); err != nil {
			return err
		}
		if err := l.startKubelet(n); err != nil {
			return err
		}
	}
	if err := l.startProc("outside-testserver", OutsideNS, []string{filepath.Join(l.binDir, "weft"), "testserver", "--name", "outside", "--dns-port", "53", "--records-file", l.OutsideRecords()}, nil); err != nil {
		return err
	}
	st := State{Nodes: nodes, Racks: o.Racks, Backend: o.Backend, Router: o.Router, DualStack: o.DualStack, Started: start}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := os.WriteFile(filepath.Join(l.dir, "lab.json"), b, 0o644); err != nil {
		return err
	}
	img, err := l.LoadImage(o.Image, LabImage)
	if err != nil {
		return err
	}
	l.printf("• weft installed from its image (%s, %s) and manifests: agent DaemonSet (backend %s), DNS, lb-ipam\n", LabImage, img.Digest[:19], o.Backend)
	// Deployments once every node is Ready, so the scheduler spreads them.
	conf := l.ManifestConfig(&st, LabImage)
	if err := l.install(ctx, client, conf, func(o runtime.Object) bool { return !isDeployment(o) }); err != nil {
		return fmt.Errorf("install weft: %w", err)
	}
	if o.Backend == "bgp" {
		if err := l.configureBGP(ctx, client, o.Racks); err != nil {
			return fmt.Errorf("bgp objects: %w", err)
		}
	}
	if err := l.waitNodesReady(ctx, client, len(nodes), 3*time.Minute); err != nil {
		return err
	}
	if err := l.install(ctx, client, conf, isDeployment); err != nil {
		return fmt.Errorf("install weft: %w", err)
	}
	l.printf("• cluster DNS %s (kube-system/%s), node-local cache %s on every node\n", ClusterDNS, DNSName, NodeLocalDNS)
	dnsWait := 2 * time.Minute
	if o.Backend == "host-gw" && o.Racks > 1 {
		// host-gw cannot route between racks: a DNS pod in another rack
		// than the API server never becomes Ready. Deploy, do not wait.
		l.printf("  (host-gw across %d racks: not waiting for cluster DNS; pods in other racks cannot reach it)\n", o.Racks)
		dnsWait = 0
	}
	if err := l.waitDNS(ctx, client, dnsWait); err != nil {
		return err
	}
	if o.Backend == "bgp" {
		if err := l.waitRouterSteady(5*time.Second, 90*time.Second); err != nil {
			return err
		}
		l.printf("• router: every node's session up for 5 s\n")
	}
	l.printf("lab up in %.1fs: %d nodes Ready\nkubeconfig: %s\n", time.Since(start).Seconds(), len(nodes), l.Kubeconfig())
	return nil
}

func (l *Lab) pkiDir() pki.Dir { return pki.Dir(filepath.Join(l.dir, "pki")) }

func (l *Lab) writePKI(nodes []Node) error {
	d := l.pkiDir()
	ca, err := pki.NewCA(d)
	if err != nil {
		return err
	}
	if err := pki.ServiceAccountKey(d); err != nil {
		return err
	}
	_, _, err = ca.Issue(d, pki.Spec{Name: "apiserver", CN: "kube-apiserver", Server: true,
		IPs: []net.IP{APIServerIP(), net.ParseIP(CPLinkIP), net.ParseIP("127.0.0.1"), net.ParseIP(KubernetesSvc)},
		DNS: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + ClusterDomain, "localhost"}})
	if err != nil {
		return err
	}
	if _, _, err := ca.Issue(d, pki.Spec{Name: "apiserver-kubelet-client", CN: "kube-apiserver-kubelet-client", Orgs: []string{"system:masters"}, Client: true}); err != nil {
		return err
	}
	caPath := d.Path("ca.crt")
	kc := func(file, server, name, cn string, orgs []string) error {
		c, k, err := ca.Issue(d, pki.Spec{Name: name, CN: cn, Orgs: orgs, Client: true})
		if err != nil {
			return err
		}
		return pki.WriteKubeconfig(filepath.Join(l.dir, file), server, caPath, c, k, cn)
	}
	internal := fmt.Sprintf("https://%s:%d", APIServerIP(), APIPort)
	local := fmt.Sprintf("https://127.0.0.1:%d", APIPort)
	if err := kc("admin.kubeconfig", fmt.Sprintf("https://%s:%d", CPLinkIP, APIPort), "admin", "weft-admin", []string{"system:masters"}); err != nil {
		return err
	}
	if err := pki.WriteKubeconfig(l.InternalKubeconfig(), internal, caPath, d.Path("admin.crt"), d.Path("admin.key"), "weft-admin"); err != nil {
		return err
	}
	if err := kc("controller-manager.kubeconfig", local, "controller-manager", "system:kube-controller-manager", nil); err != nil {
		return err
	}
	if err := kc("scheduler.kubeconfig", local, "scheduler", "system:kube-scheduler", nil); err != nil {
		return err
	}
	for _, n := range nodes {
		if err := kc("node-"+n.Name+".kubeconfig", internal, "node-"+n.Name, "system:node:"+n.Name, []string{"system:nodes"}); err != nil {
			return err
		}
		ips := []net.IP{n.IP}
		if n.IP6 != nil {
			ips = append(ips, n.IP6)
		}
		if _, _, err := ca.Issue(d, pki.Spec{Name: "kubelet-" + n.Name, CN: "system:node:" + n.Name, Server: true, IPs: ips, DNS: []string{n.Name}}); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) apiServerArgs(serviceCIDRs string) []string {
	d := l.pkiDir()
	return []string{filepath.Join(l.ControlPlaneBinDir(), "kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0", fmt.Sprintf("--secure-port=%d", APIPort),
		"--advertise-address=" + APIServerIP().String(),
		"--tls-cert-file=" + d.Path("apiserver.crt"), "--tls-private-key-file=" + d.Path("apiserver.key"),
		"--client-ca-file=" + d.Path("ca.crt"),
		"--service-cluster-ip-range=" + serviceCIDRs,
		"--service-account-issuer=https://kubernetes.default.svc." + ClusterDomain,
		"--service-account-key-file=" + d.Path("sa.pub"), "--service-account-signing-key-file=" + d.Path("sa.key"),
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate=" + d.Path("apiserver-kubelet-client.crt"), "--kubelet-client-key=" + d.Path("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + d.Path("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--allow-privileged=true", "--profiling=false", "--v=1",
	}
}

// StopAPIServer kills kube-apiserver (SIGKILL, as a crash) and waits for it
// to exit; StartAPIServer brings it back with the same flags.
func (l *Lab) StopAPIServer() error {
	b, err := os.ReadFile(filepath.Join(l.dir, "pids", "kube-apiserver.pid"))
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return err
	}
	for i := 0; i < 100 && l.procAlive("kube-apiserver"); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// StartAPIServer starts kube-apiserver again (see StopAPIServer).
func (l *Lab) StartAPIServer() error {
	st, err := l.LoadState()
	if err != nil {
		return err
	}
	cidrs := ServiceCIDR
	if st.DualStack {
		cidrs = ServiceCIDR + "," + ServiceCIDR6
	}
	return l.startProc("kube-apiserver", ControlPlane, l.apiServerArgs(cidrs), nil)
}

func (l *Lab) startControlPlane(ctx context.Context, dual bool) error {
	cp := l.ControlPlaneBinDir()
	serviceCIDRs, clusterCIDRs, maskSizes := ServiceCIDR, ClusterCIDR, []string{"--node-cidr-mask-size=24"}
	if dual {
		serviceCIDRs, clusterCIDRs = ServiceCIDR+","+ServiceCIDR6, ClusterCIDR+","+ClusterCIDR6
		maskSizes = []string{"--node-cidr-mask-size-ipv4=24", "--node-cidr-mask-size-ipv6=64"}
	}
	d := l.pkiDir()
	if err := l.startProc("etcd", ControlPlane, []string{filepath.Join(cp, "etcd"), "--data-dir", filepath.Join(l.dir, "etcd")}, nil); err != nil {
		return err
	}
	apiArgs := l.apiServerArgs(serviceCIDRs)
	if err := l.startProc("kube-apiserver", ControlPlane, apiArgs, nil); err != nil {
		return err
	}
	client, err := l.Client()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && strings.TrimSpace(string(body)) == "ok" {
			break
		}
		if !l.procAlive("kube-apiserver") || !l.procAlive("etcd") {
			return fmt.Errorf("control plane exited; see %s", filepath.Join(l.dir, "logs"))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready after 90s: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	cm := filepath.Join(l.dir, "controller-manager.kubeconfig")
	if err := l.startProc("kube-controller-manager", ControlPlane, append([]string{filepath.Join(cp, "kube-controller-manager"),
		"--kubeconfig=" + cm, "--authentication-kubeconfig=" + cm, "--authorization-kubeconfig=" + cm,
		"--bind-address=127.0.0.1", "--leader-elect=false",
		"--allocate-node-cidrs=true", "--cluster-cidr=" + clusterCIDRs,
		"--service-cluster-ip-range=" + serviceCIDRs,
		"--service-account-private-key-file=" + d.Path("sa.key"), "--root-ca-file=" + d.Path("ca.crt"),
		"--use-service-account-credentials=true",
		"--cluster-signing-cert-file=" + d.Path("ca.crt"), "--cluster-signing-key-file=" + d.Path("ca.key"),
		"--v=1",
	}, maskSizes...), nil); err != nil {
		return err
	}
	sc := filepath.Join(l.dir, "scheduler.kubeconfig")
	return l.startProc("kube-scheduler", ControlPlane, []string{filepath.Join(cp, "kube-scheduler"),
		"--kubeconfig=" + sc, "--authentication-kubeconfig=" + sc, "--authorization-kubeconfig=" + sc,
		"--bind-address=127.0.0.1", "--leader-elect=false", "--v=1"}, nil)
}

// NodeDir is a node's state directory (CNI files, pods).
func (l *Lab) NodeDir(node string) string { return filepath.Join(l.dir, "nodes", node) }

func (l *Lab) startKubelet(n Node) error {
	nd := l.NodeDir(n.Name)
	weft := filepath.Join(l.binDir, "weft")
	d := l.pkiDir()
	node := []string{weft, "lab", "node",
		"--name=" + n.Name, "--ip=" + n.IP.String(), "--ip6=" + ipString(n.IP6),
		"--kubeconfig=" + filepath.Join(l.dir, "node-"+n.Name+".kubeconfig"),
		"--host-root=" + l.NodeRoot(n.Name),
		"--images=" + l.ImageTable(),
		"--cni-conf-dir=" + filepath.Join(l.NodeRoot(n.Name), "etc", "cni", "net.d"),
		"--cni-bin-dir=" + filepath.Join(l.NodeRoot(n.Name), "opt", "cni", "bin"),
		"--cni-cache-dir=" + filepath.Join(nd, "cni", "cache"),
		"--state-dir=" + nd,
		"--serving-cert=" + d.Path("kubelet-"+n.Name+".crt"), "--serving-key=" + d.Path("kubelet-"+n.Name+".key"),
		"--client-ca=" + d.Path("ca.crt"),
		"--zone=" + strings.TrimPrefix(RackName(n.Rack), "weft-"),
		"--cluster-dns=" + NodeLocalDNS, // pods ask the node-local cache
		"--node-log-dir=" + filepath.Join(l.dir, "logs"),
	}
	if agnhost := filepath.Join(l.ControlPlaneBinDir(), "agnhost"); fileExists(agnhost) {
		node = append(node, "--agnhost="+agnhost)
	}
	if n.ControlPlane {
		node = append(node, "--control-plane")
	}
	return l.startProc("node-"+n.Name, n.Name, node, nil)
}

// Client returns an admin client for the host.
func (l *Lab) Client() (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.Kubeconfig())
	if err != nil {
		return nil, err
	}
	// Inline the certificates: client-go caches transports by file path,
	// and a new lab writes a new CA to the same paths.
	if err := rest.LoadTLSFiles(cfg); err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	return kubernetes.NewForConfig(cfg)
}

func (l *Lab) waitNodesReady(ctx context.Context, client kubernetes.Interface, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	lastReport := ""
	for {
		nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		ready := 0
		if err == nil {
			for _, n := range nodes.Items {
				for _, c := range n.Status.Conditions {
					if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
						ready++
					}
				}
			}
		}
		report := fmt.Sprintf("  %d/%d nodes Ready\n", ready, want)
		if report != lastReport {
			l.printf("%s", report)
			lastReport = report
		}
		if ready == want {
			return nil
		}
		for name := range map[string]bool{"etcd": true, "kube-apiserver": true, "kube-controller-manager": true, "kube-scheduler": true} {
			if !l.procAlive(name) {
				return fmt.Errorf("%s exited; see %s", name, filepath.Join(l.dir, "logs", name+".log"))
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d nodes Ready after %s; see logs in %s", ready, want, timeout, filepath.Join(l.dir, "logs"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Down removes everything the lab made and returns how many things it
// removed. It works without a state file, from names alone.
func (l *Lab) Down() int {
	removed := 0
	l.stopAll()
	entries, _ := os.ReadDir("/run/netns")
	var pods, others []string
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, "weft-test-"):
			// Tests clean their own namespaces.
		case strings.HasPrefix(name, "weft-pod-"):
			pods = append(pods, name)
		case strings.HasPrefix(name, "weft-"):
			others = append(others, name)
		}
	}
	for _, n := range append(pods, others...) {
		if run("ip", "netns", "del", n) == nil {
			removed++
		}
	}
	if run("ip", "link", "del", HostLink) == nil {
		removed++
	}
	if _, err := os.Stat(l.dir); err == nil {
		// Pod volumes are bind-mounted only inside per-container mount
		// namespaces, which died with the processes; nothing is mounted here.
		if err := os.RemoveAll(l.dir); err == nil {
			removed++
		}
	}
	return removed
}

// Kubectl runs the lab's kubectl with the admin kubeconfig.
func (l *Lab) Kubectl(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd := exec.Command(filepath.Join(l.ControlPlaneBinDir(), "kubectl"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+l.Kubeconfig())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	return cmd.Run()
}

// NodeProcess names one of a node's lab processes.
type NodeProcess string

// The per-node processes.
const (
	ProcAgent   NodeProcess = "agent"
	ProcKubelet NodeProcess = "node"
)

// KillNodeProcess sends sig to a node's agent (its DaemonSet pod's
// container) or lab node and waits for it to exit.
func (l *Lab) KillNodeProcess(node string, p NodeProcess, sig syscall.Signal) error {
	pid := 0
	if p == ProcAgent {
		if pid = agentPID(node); pid == 0 {
			return fmt.Errorf("no agent runs on %s", node)
		}
	} else {
		b, err := os.ReadFile(filepath.Join(l.dir, "pids", string(p)+"-"+node+".pid"))
		if err != nil {
			return err
		}
		if pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			return err
		}
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return err
	}
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil && !isZombie(pid); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// StartNodeProcess (re)starts a node's lab node; for the agent, whose pod
// the lab node restarts by itself, it waits until the agent runs again.
func (l *Lab) StartNodeProcess(node string, p NodeProcess) error {
	if p == ProcAgent {
		for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if agentPID(node) != 0 {
				return nil
			}
		}
		return fmt.Errorf("the agent on %s was not restarted within 90 s", node)
	}
	st, err := l.LoadState()
	if err != nil {
		return err
	}
	for _, n := range st.Nodes {
		if n.Name == node {
			return l.startKubelet(n)
		}
	}
	return fmt.Errorf("no lab node %q", node)
}

// AgentRuns reports whether an agent runs on node.
func (l *Lab) AgentRuns(node string) bool { return agentPID(node) != 0 }

// AgentPID is the process ID of node's agent, 0 when none runs.
func (l *Lab) AgentPID(node string) int { return agentPID(node) }

// agentPID finds the running agent of a node by its command line (the
// DaemonSet's: weft agent --node-name=NODE ...), 0 when there is none.
func agentPID(node string) int {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) > 2 && filepath.Base(args[0]) == "weft" && args[1] == "agent" && slices.Contains(args, "--node-name="+node) && !isZombie(pid) {
			return pid
		}
	}
	return 0
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// ipString is "" for a nil address (an empty flag means "none").
func ipString(ip net.IP) string {
	if ip == nil {
		return ""
	}
	return ip.String()
}

// registerControlPlane creates the control-plane Node with kubeadm's role
// label and taint before its lab node registers (which then adds its own
// labels). A kubelet may not set node-role labels (NodeRestriction), and
// the label must be there from the start: the EndpointSlice controller
// leaves such nodes out of its per-zone CPU count for topology hints, and
// recounts only when a node is added or changes readiness or zone.
func registerControlPlane(ctx context.Context, client kubernetes.Interface) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: ControlPlane, Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""}},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule}}},
	}
	if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("register %s: %w", ControlPlane, err)
	}
	return nil
}
