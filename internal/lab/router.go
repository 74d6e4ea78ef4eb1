package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Routers the lab can run as the racks' BGP router (backend bgp).
const (
	RouterBIRD = "bird"
	RouterFRR  = "frr"
	// RouterASN is the routers' AS; the nodes are in bgp.DefaultASN.
	RouterASN = 65000
	NodeASN   = 64512
	// Hold time of the router sessions: short, so that a dead node's
	// routes go within seconds even without BFD.
	RouterHoldTime = 9
)

// routerConfig is what the BIRD and FRR configurations are written from.
type routerConfig struct {
	RouterID    string
	RouterASN   int
	NodeASN     int
	HoldTime    int
	ClusterCIDR string
	LBPool      string
	Sock        string
	Nodes       []routerNode
	Racks       []string // gateway link names (BFD interfaces)
	BFD         bool
}

type routerNode struct {
	Name    string // protocol name
	IP      string
	Gateway string // the router's address on the node's rack
}

func newRouterConfig(l *Lab, nodes []Node, racks int) routerConfig {
	c := routerConfig{RouterID: RouterOutIP, RouterASN: RouterASN, NodeASN: NodeASN, HoldTime: RouterHoldTime,
		ClusterCIDR: ClusterCIDR, LBPool: LBPool, Sock: l.RouterSocket(), BFD: true}
	for _, n := range nodes {
		c.Nodes = append(c.Nodes, routerNode{Name: strings.ReplaceAll(n.Name, "-", "_"), IP: n.IP.String(), Gateway: RackGateway(n.Rack).String()})
	}
	for r := 0; r < racks; r++ {
		c.Racks = append(c.Racks, rackGatewayLink(r))
	}
	return c
}

// RouterSocket is the control socket of the lab's BIRD (birdc -s).
func (l *Lab) RouterSocket() string { return filepath.Join(l.dir, "router", "bird.ctl") }

// The BIRD configuration: one eBGP session per node from the router's
// address on the node's rack, BFD on them, graceful restart; only pod
// CIDRs and LoadBalancer addresses are taken from nodes, and what is
// learned goes into the router namespace's kernel table (with ECMP when
// several nodes announce one address).
//
// Written with fmt, not text/template: a reachable template executor makes
// the linker keep every exported method of every type in the binary.
func birdConfig(c routerConfig) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("router id %s;", c.RouterID)
	p("log stderr all;")
	p("protocol device { scan time 10; }")
	p("protocol kernel {\n\tipv4 { import none; export where source = RTS_BGP; };\n\tmerge paths on;\n}")
	p("protocol bfd {")
	for _, r := range c.Racks {
		p("\tinterface %q { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };", r)
	}
	p("}")
	p("filter from_nodes {\n\tif net ~ [ %s{16,32}, %s{24,32} ] then accept;\n\treject;\n}", c.ClusterCIDR, c.LBPool)
	bfd := "off"
	if c.BFD {
		bfd = "on"
	}
	p("template bgp node {")
	p("\tlocal as %d;\n\thold time %d;\n\tkeepalive time 3;\n\tconnect retry time 2;\n\terror wait time 1, 5;", c.RouterASN, c.HoldTime)
	p("\tgraceful restart on;\n\tbfd %s;", bfd)
	p("\tipv4 { import filter from_nodes; export where source = RTS_BGP; add paths off; };\n}")
	for _, n := range c.Nodes {
		p("protocol bgp %s from node { neighbor %s as %d; source address %s; }", n.Name, n.IP, c.NodeASN, n.Gateway)
	}
	return b.String()
}

// startRouter runs the racks' BGP router in the router namespace.
func (l *Lab) startRouter(kind string, nodes []Node, racks int) error {
	dir := filepath.Join(l.dir, "router")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cfg := newRouterConfig(l, nodes, racks)
	switch kind {
	case RouterBIRD:
		if _, err := exec.LookPath("bird"); err != nil {
			return fmt.Errorf("bird not installed (hack/install-deps.sh installs bird2): %w", err)
		}
		f, err := l.writeBIRD(cfg)
		if err != nil {
			return err
		}
		return l.startProc("router-bird", RouterNS, []string{"bird", "-f", "-c", f, "-s", cfg.Sock}, nil)
	case RouterFRR:
		return l.startFRR(dir, cfg)
	}
	return fmt.Errorf("unknown router %q (want bird or frr)", kind)
}

func (l *Lab) writeBIRD(cfg routerConfig) (string, error) {
	f := filepath.Join(l.dir, "router", "bird.conf")
	return f, os.WriteFile(f, []byte(birdConfig(cfg)), 0o644)
}

// SetRouterBFD turns BFD on the router's sessions with the nodes on or
// off (tests of failure detection with and without it).
func (l *Lab) SetRouterBFD(on bool) error {
	st, err := l.LoadState()
	if err != nil {
		return err
	}
	cfg := newRouterConfig(l, st.Nodes, st.Racks)
	cfg.BFD = on
	switch st.Router {
	case RouterBIRD:
		if _, err := l.writeBIRD(cfg); err != nil {
			return err
		}
		return run("birdc", "-s", cfg.Sock, "configure")
	case RouterFRR:
		return l.frrBFD(cfg, on)
	}
	return fmt.Errorf("no router in this lab (backend %s)", st.Backend)
}

// RouterRoutes returns the router's BGP-learned routes as "prefix via
// next hop" lines from its kernel table (proto bird or bgp).
func (l *Lab) RouterRoutes() ([]string, error) {
	out, err := exec.Command("ip", "-n", RouterNS, "-j", "route", "show").Output()
	if err != nil {
		return nil, err
	}
	var rs []struct {
		Dst      string `json:"dst"`
		Gateway  string `json:"gateway"`
		Protocol string `json:"protocol"`
		Nexthops []struct {
			Gateway string `json:"gateway"`
		} `json:"nexthops"`
	}
	if err := json.Unmarshal(out, &rs); err != nil {
		return nil, err
	}
	var lines []string
	for _, r := range rs {
		if r.Protocol != "bird" && r.Protocol != "bgp" {
			continue
		}
		via := []string{}
		if r.Gateway != "" {
			via = append(via, r.Gateway)
		}
		for _, nh := range r.Nexthops {
			via = append(via, nh.Gateway)
		}
		lines = append(lines, r.Dst+" via "+strings.Join(via, ","))
	}
	return lines, nil
}

// configureBGP creates the cluster's BGP objects for the lab: the
// BGPConfiguration (mesh on, LoadBalancer pool announced, BFD between
// nodes) and one BGPPeer per rack (its router, for the rack's nodes).
func (l *Lab) configureBGP(ctx context.Context, client kubernetes.Interface, racks int) error {
	objs := []map[string]any{{
		"apiVersion": "bgp.weft.dev/v1alpha1", "kind": "BGPConfiguration", "metadata": map[string]any{"name": "default"},
		"spec": map[string]any{"asn": NodeASN, "nodeToNodeMesh": true, "serviceLoadBalancerIPs": []string{LBPool},
			"nodeBFD": map[string]any{"intervalMs": 100, "multiplier": 3}},
	}}
	for r := 0; r < racks; r++ {
		objs = append(objs, map[string]any{
			"apiVersion": "bgp.weft.dev/v1alpha1", "kind": "BGPPeer", "metadata": map[string]any{"name": RackName(r)},
			"spec": map[string]any{"peerAddress": RackGateway(r).String(), "peerASN": RouterASN,
				"holdTimeSeconds": RouterHoldTime, "keepaliveSeconds": 3,
				"bfd":          map[string]any{"intervalMs": 100, "multiplier": 3},
				"nodeSelector": map[string]any{"matchLabels": map[string]string{"topology.kubernetes.io/zone": fmt.Sprintf("rack-%c", 'a'+r)}}},
		})
	}
	for _, o := range objs {
		if err := CreateBGPObject(ctx, client, o); err != nil {
			return err
		}
	}
	return nil
}

// CreateBGPObject creates one bgp.weft.dev object (retrying while its CRD
// is being established).
func CreateBGPObject(ctx context.Context, client kubernetes.Interface, o map[string]any) error {
	plural := map[string]string{"BGPConfiguration": "bgpconfigurations", "BGPPeer": "bgppeers"}[o["kind"].(string)]
	body, _ := json.Marshal(o)
	var err error
	for i := 0; i < 100; i++ {
		err = client.Discovery().RESTClient().Post().AbsPath("/apis/bgp.weft.dev/v1alpha1", plural).Body(body).Do(ctx).Error()
		if err == nil || strings.Contains(err.Error(), "already exists") {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("create %s: %w", o["kind"], err)
}

// RouterEstablished reports, per node, whether the router's BGP session
// with it is Established.
func (l *Lab) RouterEstablished() (map[string]bool, error) {
	st, err := l.LoadState()
	if err != nil {
		return nil, err
	}
	up := map[string]bool{}
	switch st.Router {
	case RouterBIRD:
		out, err := exec.Command("birdc", "-s", l.RouterSocket(), "show", "protocols").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("birdc: %v: %s", err, out)
		}
		for _, n := range st.Nodes {
			proto := strings.ReplaceAll(n.Name, "-", "_")
			for _, line := range strings.Split(string(out), "\n") {
				if f := strings.Fields(line); len(f) > 0 && f[0] == proto {
					up[n.Name] = strings.Contains(line, "Established")
				}
			}
		}
	case RouterFRR:
		byIP, err := l.frrEstablished()
		if err != nil {
			return nil, err
		}
		for _, n := range st.Nodes {
			up[n.Name] = byIP[n.IP.String()]
		}
	default:
		return nil, fmt.Errorf("no router in this lab (backend %s)", st.Backend)
	}
	return up, nil
}

// RouterRoute is the router namespace's kernel route to dst ("" if none).
func RouterRoute(dst string) string {
	out, _ := exec.Command("ip", "-n", RouterNS, "route", "show", dst).CombinedOutput()
	return strings.TrimSpace(string(out))
}

// SetRackBFD turns BFD on or off at both ends of the router sessions (the
// racks' BGPPeers and the router) and waits until every session is up.
func (l *Lab) SetRackBFD(ctx context.Context, client kubernetes.Interface, on bool) error {
	st, err := l.LoadState()
	if err != nil {
		return err
	}
	var bfd any
	if on {
		bfd = map[string]any{"intervalMs": 100, "multiplier": 3}
	}
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"bfd": bfd}})
	for r := 0; r < st.Racks; r++ {
		err := client.Discovery().RESTClient().Patch(types.MergePatchType).AbsPath("/apis/bgp.weft.dev/v1alpha1/bgppeers", RackName(r)).Body(patch).Do(ctx).Error()
		if err != nil {
			return err
		}
	}
	if err := l.SetRouterBFD(on); err != nil {
		return err
	}
	var up map[string]bool
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		up, err = l.RouterEstablished()
		all := err == nil && len(up) == len(st.Nodes)
		for _, v := range up {
			all = all && v
		}
		if all {
			time.Sleep(2 * time.Second) // BFD sessions come up after BGP's
			return nil
		}
	}
	return fmt.Errorf("router sessions not all up within a minute: %v %v", up, err)
}

// waitRouterSteady waits until every router session has been Established
// for steady without a break: sessions come up, and may reset once while
// the agents read the BGP objects the lab creates after them.
func (l *Lab) waitRouterSteady(steady, limit time.Duration) error {
	var since time.Time
	var up map[string]bool
	var err error
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		up, err = l.RouterEstablished()
		all := err == nil && len(up) > 0
		for _, v := range up {
			all = all && v
		}
		switch {
		case !all:
			since = time.Time{}
		case since.IsZero():
			since = time.Now()
		case time.Since(since) >= steady:
			return nil
		}
	}
	return fmt.Errorf("router sessions not steadily up within %s: %v %v", limit, up, err)
}
