package main

import (
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"weft.dev/weft/internal/testserver"
)

func testserverCmd() *cobra.Command {
	var cfg testserver.Config
	cmd := &cobra.Command{
		Use:   "testserver",
		Short: "Serve HTTP (/hostname, /clientip, /echo, /healthz) and TCP/UDP echo for tests",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return testserver.New(cfg, logger()).Run(ctx)
		},
	}
	cmd.Flags().IntVar(&cfg.HTTPPort, "http-port", 8080, "HTTP port")
	cmd.Flags().IntVar(&cfg.TCPPort, "tcp-port", 8081, "TCP echo port")
	cmd.Flags().IntVar(&cfg.UDPPort, "udp-port", 8081, "UDP echo port")
	cmd.Flags().StringVar(&cfg.Name, "name", "", "name /hostname returns (default $POD_NAME, else the hostname)")
	return cmd
}
