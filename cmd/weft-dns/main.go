// Command weft-dns is weft's cluster DNS server alone (the same as
// `weft dns`): a smaller binary than weft, since a DNS pod needs none of
// the agent, proxy, ingress or lab code, so fewer of its pages are resident.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"weft.dev/weft/internal/dns/dnscli"
	"weft.dev/weft/internal/version"
)

func main() {
	logger := func() *slog.Logger {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	cmd := dnscli.Command("weft-dns", logger)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.Version = version.Version
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "weft-dns:", err)
		os.Exit(1)
	}
}
