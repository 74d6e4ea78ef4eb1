// Command weft is weft's one binary: the node agent, the lab, the test
// server and (later) cluster DNS and ingress.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"weft.dev/weft/internal/version"
)

func main() {
	root := &cobra.Command{
		Use:           "weft",
		Short:         "Kubernetes networking in one project: pod network, services, DNS, ingress, policy",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(agentCmd(), dnsCmd(), ingressCmd(), installCNICmd(), labCmd(), lbipamCmd(), manifestsCmd(), testserverCmd(), versionCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "weft:", err)
		os.Exit(1)
	}
}

func logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print weft's version",
		Run:   func(*cobra.Command, []string) { fmt.Println("weft", version.Version) },
	}
}
