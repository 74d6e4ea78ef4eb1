package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"weft.dev/weft/internal/manifests"
)

func manifestsCmd() *cobra.Command {
	c := manifests.Defaults()
	cmd := &cobra.Command{
		Use:   "manifests",
		Short: "Print the manifests that install weft on a cluster (deploy/weft.yaml is this with the defaults)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := manifests.Render(c)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.Image, "image", c.Image, "weft's image")
	f.StringVar(&c.Namespace, "namespace", c.Namespace, "namespace of weft's components")
	f.StringSliceVar(&c.ClusterCIDRs, "cluster-cidr", c.ClusterCIDRs, "pod network CIDRs (kube-controller-manager's --cluster-cidr)")
	f.StringSliceVar(&c.ServiceCIDRs, "service-cidr", c.ServiceCIDRs, "service CIDRs (kube-apiserver's --service-cluster-ip-range)")
	f.StringVar(&c.ClusterDNS, "cluster-dns", c.ClusterDNS, "the kube-dns Service's address (kubelet's clusterDNS)")
	f.StringVar(&c.ClusterDomain, "cluster-domain", c.ClusterDomain, "cluster domain")
	f.StringVar(&c.Backend, "backend", c.Backend, "pod network backend: vxlan, host-gw, auto or bgp (bgp adds a Role reading Secrets in the namespace, for BGP passwords)")
	f.StringVar(&c.NodeLocalDNS, "node-local-dns", c.NodeLocalDNS, "node-local DNS cache address (empty: none)")
	f.StringSliceVar(&c.DNSUpstreams, "dns-upstream", nil, "resolvers for names outside the cluster (empty: the nodes')")
	f.Int32Var(&c.DNSReplicas, "dns-replicas", c.DNSReplicas, "cluster DNS replicas")
	f.StringVar(&c.LBPool, "lb-pool", "", "run lb-ipam with this LoadBalancer address pool (empty: no lb-ipam)")
	f.StringVar(&c.CNIBinDir, "cni-bin-dir", c.CNIBinDir, "the nodes' CNI plugin directory")
	f.StringVar(&c.CNIConfDir, "cni-conf-dir", c.CNIConfDir, "the nodes' CNI config directory")
	f.StringVar(&c.APIServer, "api-server", "", "host:port agents reach the API server at (empty: create the weft-api-server ConfigMap yourself, see docs/install.md)")
	f.StringSliceVar(&c.NoMasquerade, "no-masquerade", nil, "destinations pods reach unmasqueraded besides the cluster CIDRs (e.g. the nodes' network)")
	f.StringArrayVar(&c.AgentArgs, "agent-arg", nil, "extra flag for every agent (repeatable)")
	f.Int32Var(&c.IngressReplicas, "ingress-replicas", c.IngressReplicas, "weft ingress replicas (0: no ingress controller)")
	f.BoolVar(&c.IngressDefaultClass, "ingress-default-class", false, "make IngressClass weft the cluster's default")
	f.BoolVar(&c.IngressNginxClass, "ingress-nginx-class", false, "serve IngressClass nginx too (delete ingress-nginx's IngressClass first): ingress-nginx's Ingresses move as they are")
	f.StringVar(&c.GatewayChannel, "gateway-channel", c.GatewayChannel, "Gateway API CRDs' channel: standard, or experimental (adds HTTPRoute retries)")
	return cmd
}

// installCNICmd copies weft-cni into the host's CNI directory: the agent
// DaemonSet's init container.
func installCNICmd() *cobra.Command {
	var from, to string
	cmd := &cobra.Command{
		Use:   "install-cni",
		Short: "Install weft-cni into a CNI plugin directory (atomically: a runtime never sees half a binary)",
		RunE: func(*cobra.Command, []string) error {
			if from == "" {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				from = filepath.Join(filepath.Dir(self), "weft-cni")
			}
			return installFile(from, filepath.Join(to, "weft-cni"))
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "weft-cni to install (default: beside this binary)")
	cmd.Flags().StringVar(&to, "to", "/opt/cni/bin", "CNI plugin directory")
	return cmd
}

func installFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(to), ".weft-cni-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), to); err != nil {
		return err
	}
	fmt.Println("installed", to)
	return nil
}
