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
		Short: "Serve HTTP (/hostname, /clientip, /echo, /healthz, /ws), gRPC health, and TCP/UDP echo for tests",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return testserver.New(cfg, logger()).Run(ctx)
		},
	}
	cmd.Flags().IntVar(&cfg.HTTPPort, "http-port", 8080, "HTTP port")
	cmd.Flags().IntVar(&cfg.TCPPort, "tcp-port", 8081, "TCP echo port")
	cmd.Flags().IntVar(&cfg.UDPPort, "udp-port", 8081, "UDP echo port")
	cmd.Flags().IntVar(&cfg.GRPCPort, "grpc-port", 0, "gRPC health service port, h2c (0: off; off by default so two testservers fit in one pod)")
	cmd.Flags().StringVar(&cfg.Name, "name", "", "name /hostname returns (default $POD_NAME, else the hostname)")
	cmd.Flags().IntVar(&cfg.DNSPort, "dns-port", 0, "serve the outside.test DNS zone on this port (0: off)")
	cmd.Flags().StringVar(&cfg.WWWAddress, "www-address", "203.0.113.10", "address of www.outside.test")
	cmd.Flags().StringVar(&cfg.RecordsFile, "records-file", "", `more A records of the zone, read at every query: lines of "name ttl address..."`)
	cmd.AddCommand(tcprrCmd(), scanCmd(), holdCmd(), watchCmd(), wsCmd(), grpcCmd(), loadCmd(), untilOKCmd())
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

func wsCmd() *cobra.Command {
	var host string
	var dur, every time.Duration
	cmd := &cobra.Command{
		Use:   "ws URL",
		Short: "Hold one WebSocket to URL (ws:// or wss://), checking an echo every interval (JSON: messages sent and answered)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := testserver.HoldWebSocket(cmd.Context(), args[0], host, dur, every)
			_ = json.NewEncoder(os.Stdout).Encode(r)
			return err
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "Host header (default: the URL's host)")
	cmd.Flags().DurationVar(&dur, "for", 5*time.Second, "how long to hold the connection")
	cmd.Flags().DurationVar(&every, "every", 100*time.Millisecond, "interval between messages")
	return cmd
}

func grpcCmd() *cobra.Command {
	var authority string
	var useTLS bool
	var messages int
	cmd := &cobra.Command{
		Use:   "grpc ADDR",
		Short: "Call the gRPC health service at ADDR: one unary Check and a Watch stream (JSON: status and messages streamed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := testserver.CheckGRPC(cmd.Context(), args[0], authority, useTLS, messages)
			if err != nil {
				return err
			}
			return json.NewEncoder(os.Stdout).Encode(r)
		},
	}
	cmd.Flags().StringVar(&authority, "authority", "", ":authority (the virtual host; also the TLS server name)")
	cmd.Flags().BoolVar(&useTLS, "tls", false, "TLS (certificate not verified) instead of h2c")
	cmd.Flags().IntVar(&messages, "messages", 5, "Watch stream messages to read")
	return cmd
}

func loadCmd() *cobra.Command {
	var host string
	var workers int
	var dur time.Duration
	cmd := &cobra.Command{
		Use:   "load URL",
		Short: "GET URL back to back from keep-alive clients (JSON: requests and failures)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r := testserver.Load(cmd.Context(), args[0], host, workers, dur)
			return json.NewEncoder(os.Stdout).Encode(r)
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "Host header")
	cmd.Flags().IntVar(&workers, "workers", 4, "concurrent clients")
	cmd.Flags().DurationVar(&dur, "for", 10*time.Second, "how long")
	return cmd
}

func untilOKCmd() *cobra.Command {
	var host string
	var dur, every time.Duration
	cmd := &cobra.Command{
		Use:   "until-ok URL",
		Short: "GET URL until it answers 200 (JSON: when, in Unix nanoseconds, and after how many tries)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			r, err := testserver.UntilOK(args[0], host, dur, every)
			if err != nil {
				return err
			}
			return json.NewEncoder(os.Stdout).Encode(r)
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "Host header")
	cmd.Flags().DurationVar(&dur, "for", 10*time.Second, "how long to keep asking")
	cmd.Flags().DurationVar(&every, "every", 2*time.Millisecond, "interval between tries")
	return cmd
}
