// Package masq owns the agent's egress NAT table: pod traffic that leaves
// the cluster is masqueraded to the node's address; traffic to the cluster
// CIDR and to exempt CIDRs keeps the pod's source IP.
package masq

import (
	"context"
	"fmt"
	"net"

	"sigs.k8s.io/knftables"
)

// TableName is the agent's own nftables table; nothing else touches it.
const TableName = "weft-masquerade"

// Desired is the pure description of the table's content.
type Desired struct {
	ClusterCIDRs []*net.IPNet // pod source ranges that get masqueraded
	Exempt       []*net.IPNet // destinations never NATed (cluster CIDR included)
}

// Build fills tx with the whole table (a full sync).
func Build(tx *knftables.Transaction, d Desired) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("weft agent: pod egress masquerade")})
	tx.Add(&knftables.Set{Name: "no-masq-v4", Type: "ipv4_addr", Flags: []knftables.SetFlag{knftables.IntervalFlag}})
	tx.Add(&knftables.Set{Name: "no-masq-v6", Type: "ipv6_addr", Flags: []knftables.SetFlag{knftables.IntervalFlag}})
	tx.Flush(&knftables.Set{Name: "no-masq-v4"})
	tx.Flush(&knftables.Set{Name: "no-masq-v6"})
	for _, n := range collapse(d.Exempt) {
		set := "no-masq-v4"
		if n.IP.To4() == nil {
			set = "no-masq-v6"
		}
		tx.Add(&knftables.Element{Set: set, Key: []string{n.String()}})
	}
	tx.Add(&knftables.Chain{Name: "postrouting", Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.PostroutingHook), Priority: knftables.PtrTo(knftables.SNATPriority)})
	tx.Flush(&knftables.Chain{Name: "postrouting"})
	for _, c := range d.ClusterCIDRs {
		fam, set := "ip", "@no-masq-v4"
		if c.IP.To4() == nil {
			fam, set = "ip6", "@no-masq-v6"
		}
		tx.Add(&knftables.Rule{Chain: "postrouting", Rule: knftables.Concat(
			fam, "saddr", c.String(), fam, "daddr", "!=", set, "masquerade", "fully-random"),
			Comment: knftables.PtrTo("pod egress leaves the cluster")})
	}
}

// Writer applies Desired to the kernel.
type Writer struct{ nft knftables.Interface }

// NewWriter opens the table in the current network namespace.
func NewWriter() (*Writer, error) {
	nft, err := knftables.New(knftables.InetFamily, TableName)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return &Writer{nft: nft}, nil
}

// NewWriterWith uses a given knftables interface (a Fake in tests).
func NewWriterWith(nft knftables.Interface) *Writer { return &Writer{nft: nft} }

// Apply replaces the table's content in one transaction.
func (w *Writer) Apply(ctx context.Context, d Desired) error {
	tx := w.nft.NewTransaction()
	Build(tx, d)
	return w.nft.Run(ctx, tx)
}

// Delete removes the table (agent uninstall).
func (w *Writer) Delete(ctx context.Context) error {
	tx := w.nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	return w.nft.Run(ctx, tx)
}

// collapse drops duplicates and networks contained in another: nftables
// rejects overlapping elements in an interval set.
func collapse(nets []*net.IPNet) []*net.IPNet {
	var out []*net.IPNet
	for i, n := range nets {
		covered := false
		for j, m := range nets {
			if i == j {
				continue
			}
			nOnes, nBits := n.Mask.Size()
			mOnes, mBits := m.Mask.Size()
			if nBits != mBits || !m.Contains(n.IP) {
				continue
			}
			// m covers n if m is wider, or equal and listed first.
			if mOnes < nOnes || (mOnes == nOnes && j < i) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, n)
		}
	}
	return out
}
