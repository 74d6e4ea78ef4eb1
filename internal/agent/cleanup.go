package agent

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"

	"weft.dev/weft/internal/agent/nodedns"
	"weft.dev/weft/internal/netpol"
	"weft.dev/weft/internal/proxy"
)

// disabledTables names the nftables tables of features this configuration
// turns off: a service proxy per family not served, the node-local DNS
// table when the cache is off.
func disabledTables(cfg Config) []string {
	var out []string
	served := serviceFamilies(cfg.ServiceCIDRs)
	for _, f := range []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol} {
		if !cfg.Proxy || !slices.Contains(served, f) {
			out = append(out, proxy.TableFor(f))
		}
	}
	if cfg.NodeLocalDNS == nil {
		out = append(out, nodedns.TableName)
	}
	if !cfg.NetworkPolicy {
		out = append(out, netpol.TableName)
	}
	return out
}

// removeDisabled deletes what an earlier run with more features left: their
// tables, and the node-local DNS address on lo when the cache is off (a
// link-local address on lo is put there by no one else).
func removeDisabled(ctx context.Context, cfg Config) error {
	for _, name := range disabledTables(cfg) {
		nft, err := knftables.New(knftables.InetFamily, name)
		if err != nil {
			return err
		}
		tx := nft.NewTransaction()
		tx.Add(&knftables.Table{}) // so the delete cannot fail on a missing table
		tx.Delete(&knftables.Table{})
		if err := nft.Run(ctx, tx); err != nil {
			return fmt.Errorf("remove table %s: %w", name, err)
		}
	}
	if cfg.NodeLocalDNS != nil {
		return nil
	}
	_, err := removeLinkLocalOnLo()
	return err
}
