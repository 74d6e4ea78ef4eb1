package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"weft.dev/weft/internal/lab"
	"weft.dev/weft/internal/lab/container"
	"weft.dev/weft/internal/lab/kubelet"
)

func binDir() string {
	exe, err := os.Executable()
	if err != nil {
		return "."
	}
	exe, _ = filepath.EvalSymlinks(exe)
	return filepath.Dir(exe)
}

func labCmd() *cobra.Command {
	var stateDir, cacheDir string
	newLab := func() *lab.Lab { return lab.New(stateDir, cacheDir, binDir(), os.Stdout) }
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "A local multi-node cluster: real control plane, nodes as network namespaces",
	}
	cmd.PersistentFlags().StringVar(&stateDir, "state-dir", lab.DefaultStateDir, "lab state directory")
	cmd.PersistentFlags().StringVar(&cacheDir, "cache-dir", lab.DefaultCacheDir, "cache of built control-plane binaries")

	var opts lab.UpOptions
	up := &cobra.Command{
		Use:   "up",
		Short: "Create the lab and wait until every node is Ready",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Workers < 1 || opts.Racks < 1 || opts.Workers > 200 {
				return fmt.Errorf("--nodes must be 1..200 and --racks ≥ 1")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return newLab().Up(ctx, opts)
		},
	}
	up.Flags().IntVar(&opts.Workers, "nodes", 3, "worker nodes (the control-plane node comes on top)")
	up.Flags().IntVar(&opts.Racks, "racks", 2, "L2 segments the nodes are spread over")
	up.Flags().StringVar(&opts.Backend, "backend", "auto", "pod network backend across nodes: vxlan, host-gw, auto or bgp")
	up.Flags().StringVar(&opts.Router, "router", "", "with --backend bgp: the racks' BGP router, bird (default) or frr")
	up.Flags().StringVar(&opts.Image, "image", "", "OCI layout of weft's image to install (default: _output/lab-image beside bin/, from `make lab-image`)")
	up.Flags().BoolVar(&opts.DualStack, "dual-stack", false, "IPv4 and IPv6: node, pod and service addresses of both families")

	down := &cobra.Command{
		Use:   "down",
		Short: "Remove the lab: processes, namespaces, links, files",
		RunE: func(*cobra.Command, []string) error {
			n := newLab().Down()
			fmt.Printf("lab down (%d objects removed)\n", n)
			return nil
		},
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show nodes and lab processes",
		RunE:  func(cmd *cobra.Command, _ []string) error { return newLab().Status(cmd.Context(), os.Stdout) },
	}
	kubectl := &cobra.Command{
		Use:                "kubectl [ARGS...]",
		Short:              "Run kubectl against the lab",
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			return exitCode(newLab().Kubectl(args, os.Stdin, os.Stdout, os.Stderr))
		},
	}
	var containerName string
	execCmd := &cobra.Command{
		Use:   "exec TARGET -- CMD [ARGS...]",
		Short: "Run a command in a pod (NAMESPACE/POD), on a node, or in \"outside\"",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return exitCode(newLab().Exec(cmd.Context(), lab.ExecOptions{Target: args[0], Container: containerName,
				Argv: args[1:], Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}))
		},
	}
	execCmd.Flags().StringVarP(&containerName, "container", "c", "", "container (default: the pod's first)")
	demo := &cobra.Command{
		Use:   "demo",
		Short: "Deploy test servers and print a connectivity table",
		RunE:  func(cmd *cobra.Command, _ []string) error { return newLab().Demo(cmd.Context(), os.Stdout) },
	}
	cmd.AddCommand(demo, up, down, status, kubectl, execCmd, labNodeCmd(), runContainerCmd())
	return cmd
}

// exitCode turns a child's exit status into ours without extra noise.
func exitCode(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		os.Exit(ee.ExitCode())
	}
	return err
}

func labNodeCmd() *cobra.Command {
	var cfg kubelet.Config
	var kubeconfig, ip, ip6, zone string
	var controlPlane bool
	cmd := &cobra.Command{
		Use:    "node",
		Short:  "Run a lab node agent (kubelet-lite) in the current network namespace",
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.NodeIP = net.ParseIP(ip)
			if cfg.NodeName == "" || cfg.NodeIP == nil {
				return fmt.Errorf("--name and a valid --ip are required")
			}
			if ip6 != "" {
				if cfg.NodeIP6 = net.ParseIP(ip6); cfg.NodeIP6 == nil || cfg.NodeIP6.To4() != nil {
					return fmt.Errorf("--ip6 %q is not an IPv6 address", ip6)
				}
			}
			cfg.WeftBinary = filepath.Join(binDir(), "weft")
			cfg.Labels = map[string]string{}
			if zone != "" {
				cfg.Labels["topology.kubernetes.io/zone"] = zone
			}
			if controlPlane {
				cfg.Taints = []corev1.Taint{{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule}}
			}
			client, err := kubeClient(kubeconfig)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return kubelet.New(cfg, client, logger()).Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.NodeName, "name", "", "node name")
	f.StringVar(&ip, "ip", "", "node InternalIP")
	f.StringVar(&ip6, "ip6", "", "node's IPv6 InternalIP (dual-stack lab)")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig")
	f.StringVar(&cfg.HostRoot, "host-root", "", "this node's root directory: hostPath volumes and CNI plugins see it as / (empty: the machine's)")
	f.StringVar(&cfg.Images, "images", "", "the lab's image table: containers of its images run in their root filesystems")
	f.StringVar(&cfg.CNIConfDir, "cni-conf-dir", "/etc/cni/net.d", "CNI conflist directory")
	f.StringVar(&cfg.CNIBinDir, "cni-bin-dir", "/opt/cni/bin", "CNI plugin directory")
	f.StringVar(&cfg.CNICacheDir, "cni-cache-dir", "/var/lib/cni", "libcni cache directory")
	f.StringVar(&cfg.StateDir, "state-dir", "", "node state directory")
	f.StringVar(&cfg.ServingCert, "serving-cert", "", "kubelet API serving certificate")
	f.StringVar(&cfg.ServingKey, "serving-key", "", "kubelet API serving key")
	f.StringVar(&cfg.ClientCA, "client-ca", "", "CA for kubelet API clients")
	f.StringVar(&cfg.ClusterDNS, "cluster-dns", lab.ClusterDNS, "cluster DNS address for pods")
	f.StringVar(&cfg.NodeLogDir, "node-log-dir", "", "directory served at /logs/ on the kubelet API")
	f.StringVar(&cfg.ClusterDomain, "cluster-domain", lab.ClusterDomain, "cluster domain")
	f.StringVar(&zone, "zone", "", "topology zone label")
	f.StringVar(&cfg.AgnhostBinary, "agnhost", "", "agnhost binary for agnhost images")
	f.BoolVar(&controlPlane, "control-plane", false, "taint the node NoSchedule as a control-plane node")
	return cmd
}

func runContainerCmd() *cobra.Command {
	var specPath string
	cmd := &cobra.Command{
		Use:    "run-container --spec FILE -- CMD [ARGS...]",
		Short:  "Exec CMD inside a lab container's namespaces (used by the lab node)",
		Hidden: true,
		Args:   cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := container.Load(specPath)
			if err != nil {
				return err
			}
			return container.Exec(spec, args)
		},
	}
	cmd.Flags().StringVar(&specPath, "spec", "", "container spec written by the lab node")
	return cmd
}
