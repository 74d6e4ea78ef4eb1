// Package dnscli is the command line of weft's cluster DNS server.
package dnscli

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"weft.dev/weft/internal/dns"
	"weft.dev/weft/internal/kubeclient"
)

// Command is the cluster DNS server's command line, named use: `weft dns`
// and the lean `weft-dns` binary the DNS Deployment runs share it.
func Command(use string, logger func() *slog.Logger) *cobra.Command {
	var (
		cfg        dns.ServerConfig
		kubeconfig string
		ttl        uint32
		nsIP       string
		gcPercent  int
	)
	cmd := &cobra.Command{
		Use:   use,
		Short: "Run the cluster DNS server (Kubernetes DNS specification 1.1.0)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Records.TTL = ttl
			if nsIP != "" {
				if cfg.Records.NameserverIP = net.ParseIP(nsIP); cfg.Records.NameserverIP == nil {
					return fmt.Errorf("--nameserver-ip %q is not an IP address", nsIP)
				}
			}
			for _, u := range cfg.Upstreams {
				if _, _, err := net.SplitHostPort(u); err != nil {
					return fmt.Errorf("--upstream %q: want host:port", u)
				}
			}
			if _, set := os.LookupEnv("GOGC"); !set {
				debug.SetGCPercent(gcPercent)
			}
			client, err := kubeclient.New(kubeconfig)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return dns.NewServer(cfg, client, logger()).Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (empty: in-cluster)")
	f.IntVar(&gcPercent, "go-gc-percent", 40, "Go's GOGC (the GOGC variable wins when set): heap growth between collections, in percent of the live heap; below Go's 100 the server's memory stays closer to its records, as the agent's does")
	f.StringVar(&cfg.Records.Zone, "zone", "cluster.local", "cluster domain")
	f.Uint32Var(&ttl, "ttl", 5, "TTL of cluster records and negative answers, seconds (5, like CoreDNS: changes show quickly)")
	f.StringVar(&nsIP, "nameserver-ip", "", "address published as ns.dns.<zone> (the cluster DNS Service IP)")
	f.StringVar(&cfg.Listen, "listen", ":53", "UDP and TCP address to serve DNS on")
	f.StringSliceVar(&cfg.Upstreams, "upstream", nil, "resolvers (host:port) for names outside the zone, tried in order")
	f.StringVar(&cfg.HTTP, "http", ":9153", "address for /metrics, /healthz and /ready (empty: off)")
	LimitFlags(f, "", &cfg.Limits)
	return cmd
}

// LimitFlags adds a DNS server's abuse bounds as flags named prefix+name.
func LimitFlags(f *pflag.FlagSet, prefix string, l *dns.Limits) {
	f.IntVar(&l.MaxUDPSize, prefix+"max-udp-size", dns.DefaultMaxUDPSize, "largest UDP reply in bytes, whatever the client's EDNS buffer (bigger answers are truncated: the client retries over TCP)")
	f.IntVar(&l.MaxTCPConns, prefix+"max-tcp-conns", dns.DefaultMaxTCPConns, "open TCP connections at most")
	f.IntVar(&l.MaxInflight, prefix+"max-inflight", dns.DefaultMaxInflight, "distinct questions forwarded upstream at once (identical ones are asked once)")
	f.Float64Var(&l.RateLimit, prefix+"rate-limit", 0, "queries per second per client address, more are dropped (0: off)")
	f.IntVar(&l.RateBurst, prefix+"rate-burst", 0, "burst above --"+prefix+"rate-limit (0: one second's worth)")
}
