package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

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
	cmd.Flags().IntVar(&cfg.DNSPort, "dns-port", 0, "serve the outside.test DNS zone on this port (0: off)")
	cmd.Flags().StringVar(&cfg.WWWAddress, "www-address", "203.0.113.10", "address of www.outside.test")
	cmd.AddCommand(tcprrCmd(), scanCmd(), holdCmd(), watchCmd())
	return cmd
}

func scanCmd() *cobra.Command {
	var port int
	var dur, timeout time.Duration
	cmd := &cobra.Command{
		Use:   "scan CIDR",
		Short: "Connect to a TCP port on every address of a CIDR, round after round (JSON: the addresses reached)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			r, err := testserver.Scan(args[0], port, dur, timeout)
			if err != nil {
				return err
			}
			return json.NewEncoder(os.Stdout).Encode(r)
		},
	}
	cmd.Flags().IntVar(&port, "port", 8080, "TCP port")
	cmd.Flags().DurationVar(&dur, "for", 5*time.Second, "how long to keep scanning")
	cmd.Flags().DurationVar(&timeout, "timeout", 100*time.Millisecond, "connect timeout per address")
	return cmd
}

func holdCmd() *cobra.Command {
	var dur, every time.Duration
	cmd := &cobra.Command{
		Use:   "hold HOST:PORT",
		Short: "Keep one TCP connection to an echo server busy and report whether it was cut (JSON)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			r, err := testserver.Hold(args[0], dur, every)
			if err != nil {
				return err
			}
			return json.NewEncoder(os.Stdout).Encode(r)
		},
	}
	cmd.Flags().DurationVar(&dur, "for", 5*time.Second, "how long to hold the connection")
	cmd.Flags().DurationVar(&every, "every", 100*time.Millisecond, "interval between echoes")
	return cmd
}

func tcprrCmd() *cobra.Command {
	var count, size int
	cmd := &cobra.Command{
		Use:   "tcprr HOST:PORT",
		Short: "Time TCP request/response round trips against a TCP echo server (JSON result)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			r, err := testserver.TCPRR(args[0], count, size)
			if err != nil {
				return err
			}
			return json.NewEncoder(os.Stdout).Encode(r)
		},
	}
	cmd.Flags().IntVar(&count, "count", 2000, "round trips")
	cmd.Flags().IntVar(&size, "size", 64, "request and response size in bytes")
	return cmd
}

func watchCmd() *cobra.Command {
	var dur, every, timeout time.Duration
	var until string
	cmd := &cobra.Command{
		Use:   "watch HOST:PORT",
		Short: "Connect over and over until the port is open or blocked; print when (JSON)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if until != "open" && until != "blocked" {
				return fmt.Errorf("--until must be open or blocked")
			}
			r, err := testserver.Watch(args[0], until == "open", dur, every, timeout)
			if err != nil {
				return err
			}
			return json.NewEncoder(os.Stdout).Encode(r)
		},
	}
	cmd.Flags().StringVar(&until, "until", "blocked", "the state to wait for: open or blocked")
	cmd.Flags().DurationVar(&dur, "for", 10*time.Second, "give up after this long")
	cmd.Flags().DurationVar(&every, "every", 5*time.Millisecond, "pause between attempts")
	cmd.Flags().DurationVar(&timeout, "timeout", 20*time.Millisecond, "an attempt not connected within this is blocked")
	return cmd
}
