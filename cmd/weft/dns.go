package main

import (
	"github.com/spf13/cobra"

	"weft.dev/weft/internal/dns/dnscli"
)

func dnsCmd() *cobra.Command { return dnscli.Command("dns", logger) }
