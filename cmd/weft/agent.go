package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/internal/agent"
	"weft.dev/weft/internal/agent/masq"
	"weft.dev/weft/internal/cni"
	"weft.dev/weft/internal/dns/dnscli"
	"weft.dev/weft/internal/kubeclient"
	"weft.dev/weft/internal/proxy"
)

func agentCmd() *cobra.Command {
	var (
		cfg               agent.Config
		kubeconfig        string
		gcPercent         int
		clusterCIDRs      []string
		noMasq            []string
		serviceCIDRs      []string
		nodeLocalDNS      string
		nodePortAddresses []string
		externalIPCIDRs   []string
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent (configures the pod network on this node)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.NodeName == "" {
				return fmt.Errorf("--node-name is required")
			}
			var err error
			if cfg.ClusterCIDRs, err = parseCIDRs(clusterCIDRs); err != nil {
				return fmt.Errorf("--cluster-cidr: %w", err)
			}
			if cfg.NoMasquerade, err = parseCIDRs(noMasq); err != nil {
				return fmt.Errorf("--no-masquerade: %w", err)
			}
			if cfg.ServiceCIDRs, err = parseCIDRs(serviceCIDRs); err != nil {
				return fmt.Errorf("--service-cidr: %w", err)
			}
			if cfg.ExternalIPCIDRs, err = parseCIDRs(externalIPCIDRs); err != nil {
				return fmt.Errorf("--external-ip-cidrs: %w", err)
			}
			if cfg.NodePortAddresses, err = proxy.ParseNodePortAddresses(nodePortAddresses); err != nil {
				return fmt.Errorf("--nodeport-addresses: %w", err)
			}
			if nodeLocalDNS != "" {
				if cfg.NodeLocalDNS = net.ParseIP(nodeLocalDNS).To4(); cfg.NodeLocalDNS == nil {
					return fmt.Errorf("--node-local-dns %q is not an IPv4 address", nodeLocalDNS)
				}
				if _, _, err := net.SplitHostPort(cfg.ClusterDNS); err != nil {
					return fmt.Errorf("--cluster-dns %q: want host:port", cfg.ClusterDNS)
				}
			}
			if _, set := os.LookupEnv("GOGC"); !set {
				debug.SetGCPercent(gcPercent)
			}
			client, err := kubeClient(kubeconfig)
			if err != nil {
				return err
			}
			if cfg.Backend == "bgp" {
				if cfg.Dynamic, err = kubeclient.NewDynamic(kubeconfig); err != nil {
					return err
				}
			}
			if cfg.NetworkPolicy {
				if cfg.PolicyAPI, err = kubeclient.NewPolicyAPI(kubeconfig); err != nil {
					return err
				}
			}
			w, err := masq.NewWriter()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return agent.New(cfg, client, w, logger()).Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.NodeName, "node-name", "", "this node's name")
	f.IntVar(&gcPercent, "go-gc-percent", 40, "Go's GOGC for the agent (the GOGC variable wins when set): heap growth between collections, in percent of the live heap. Below Go's 100 a node agent trades a little CPU for memory (Calico's Felix defaults to 40 too)")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (empty: in-cluster)")
	f.StringVar(&cfg.CNIConfDir, "cni-conf-dir", "/etc/cni/net.d", "where to write the CNI conflist")
	f.StringVar(&cfg.CNIRuntimePath, "cni-runtime-config", cni.DefaultRuntimeConfigPath, "runtime config file for weft-cni")
	f.StringVar(&cfg.CNIDataDir, "cni-data-dir", cni.DefaultDataDir, "weft-cni's IPAM store")
	f.StringSliceVar(&clusterCIDRs, "cluster-cidr", []string{"10.244.0.0/16"}, "pod network CIDRs (masqueraded when leaving them)")
	f.StringSliceVar(&noMasq, "no-masquerade", nil, "extra destination CIDRs that keep the pod source IP")
	f.IntVar(&cfg.MTU, "mtu", 0, "pod MTU (0: the underlay interface's MTU minus encapsulation)")
	f.BoolVar(&cfg.Profiling, "profiling", false, "serve Go's /debug/pprof/ on --metrics-addr")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "127.0.0.1:9402", "address for /metrics and /healthz (empty: off; loopback by default, as kube-proxy's metrics)")
	f.StringVar(&cfg.Backend, "backend", "auto", "how pod networks are connected across nodes: vxlan, host-gw, auto (host-gw inside an L2 subnet, VXLAN across), or bgp (routes exchanged over BGP with the other nodes and the routers of BGPPeers; no encapsulation)")
	f.Int32Var(&cfg.BGPListenPort, "bgp-listen-port", 179, "TCP port of the bgp backend's sessions")
	f.StringVar(&cfg.Namespace, "namespace", "kube-system", "weft's namespace (where the Secrets of BGPPeers' passwords are read)")
	f.IntVar(&cfg.VNI, "vxlan-vni", 1, "VXLAN network identifier")
	f.IntVar(&cfg.VXLANPort, "vxlan-port", 4789, "VXLAN UDP port")
	f.BoolVar(&cfg.Proxy, "proxy", true, "run the nftables service proxy (replaces kube-proxy)")
	f.BoolVar(&cfg.NetworkPolicy, "network-policy", true, "enforce NetworkPolicies on this node's pods; a pod's interface comes up only once its policies are in place")
	f.BoolVar(&cfg.FastPath, "fast-path", true, "forward pod-to-pod IPv4 traffic that no conntrack entry or policy needs past the node's netfilter hooks (tc programs; docs/routing.md); a kernel that refuses the programs leaves the kernel's path")
	f.BoolVar(&cfg.PolicyKeepEstablished, "policy-keep-established", false, "let connections opened before a new deny live on (default: every packet is judged by the current policies, so a new deny cuts open connections)")
	cfg.Conntrack = proxy.DefaultConntrack
	f.DurationVar(&cfg.Conntrack.TCPEstablished, "conntrack-tcp-timeout-established", cfg.Conntrack.TCPEstablished, "idle timeout of established TCP conntrack entries (0: leave the kernel's)")
	f.DurationVar(&cfg.Conntrack.TCPCloseWait, "conntrack-tcp-timeout-close-wait", cfg.Conntrack.TCPCloseWait, "timeout of TCP conntrack entries in CLOSE_WAIT (0: leave the kernel's)")
	f.IntVar(&cfg.Conntrack.MaxPerCore, "conntrack-max-per-core", cfg.Conntrack.MaxPerCore, "conntrack table entries per CPU (0: leave the kernel's size); never lowered")
	f.IntVar(&cfg.Conntrack.Min, "conntrack-min", cfg.Conntrack.Min, "conntrack table entries at least, whatever the CPU count")
	f.BoolVar(&cfg.Conntrack.TCPBeLiberal, "conntrack-tcp-be-liberal", true, "set nf_conntrack_tcp_be_liberal instead of dropping forwarded packets conntrack holds invalid; the fast path carries established TCP flows that policies judged only in liberal mode (docs/routing.md)")
	f.StringSliceVar(&serviceCIDRs, "service-cidr", []string{"10.96.0.0/16"}, "service IP ranges (unallocated IPs in them are dropped); one service proxy runs per address family given here (IPv4, IPv6 or both)")
	f.DurationVar(&cfg.ReclaimGrace, "ip-reclaim-grace", 0, "how old an address weft-cni handed out must be before the agent frees it when no pod and no sandbox uses it (0: 2m, checked every minute; else checked every half of it)")
	f.StringSliceVar(&externalIPCIDRs, "external-ip-cidrs", nil, "where Services' externalIPs may lie (empty: anywhere but node, API server, pod and service addresses, which are always refused)")
	f.StringSliceVar(&nodePortAddresses, "nodeport-addresses", nil, `where NodePorts are served: "primary" (the default: the node's InternalIPs) or CIDRs (the node's addresses inside them; 0.0.0.0/0 and ::/0: all but loopback)`)
	f.StringVar(&nodeLocalDNS, "node-local-dns", "", "run the node-local DNS cache on this link-local address, e.g. 169.254.20.10 (empty: off)")
	dnscli.LimitFlags(f, "node-local-dns-", &cfg.NodeLocalDNSLimits)
	f.StringVar(&cfg.ClusterDNS, "cluster-dns", "10.96.0.10:53", "cluster DNS Service the node-local cache forwards to (TCP)")
	cmd.AddCommand(agentCleanupCmd())
	return cmd
}

func agentCleanupCmd() *cobra.Command {
	var cfg agent.UninstallConfig
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove everything weft made on this node (run after the agent is stopped, when uninstalling)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return agent.Uninstall(cmd.Context(), cfg, logger())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.CNIConfDir, "cni-conf-dir", "/etc/cni/net.d", "where the agent wrote the CNI conflist")
	f.StringVar(&cfg.CNIRuntimePath, "cni-runtime-config", cni.DefaultRuntimeConfigPath, "weft-cni's runtime config file")
	f.StringVar(&cfg.CNIDataDir, "cni-data-dir", cni.DefaultDataDir, "weft-cni's IPAM store")
	f.StringVar(&cfg.CNIBinDir, "cni-bin-dir", "/opt/cni/bin", "where weft-cni was installed (empty: leave it)")
	return cmd
}

func parseCIDRs(in []string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, s := range in {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func kubeClient(kubeconfig string) (kubernetes.Interface, error) {
	return kubeclient.New(kubeconfig)
}
