package agent

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"weft.dev/weft/internal/agent/nodedns"
	"weft.dev/weft/internal/testutil"
)

// Turning the proxy and the node-local DNS cache off removes their tables
// and the cache's address; tables of features still on stay.
func TestPrivilegedRemoveDisabled(t *testing.T) {
	testutil.RequireRoot(t)
	n := testutil.NewNetNS(t)
	name := filepath.Base(n.Path())
	for _, c := range [][]string{
		{"ip", "netns", "exec", name, "nft", "add", "table", "inet", "weft-proxy"},
		{"ip", "netns", "exec", name, "nft", "add", "table", "inet", "weft-proxy6"},
		{"ip", "netns", "exec", name, "nft", "add", "table", "inet", "weft-node-dns"},
		{"ip", "netns", "exec", name, "nft", "add", "table", "inet", "weft-hostport"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	err := n.Do(func(ns.NetNS) error {
		if err := nodedns.EnsureAddress(net.ParseIP("169.254.20.10").To4()); err != nil {
			return err
		}
		_, v4, _ := net.ParseCIDR("10.96.0.0/16")
		// The IPv4 proxy on, no IPv6 service CIDR, the cache off.
		cfg := Config{Proxy: true, ServiceCIDRs: []*net.IPNet{v4}}
		for i := 0; i < 2; i++ { // twice: nothing left to remove is fine
			if err := removeDisabled(context.Background(), cfg); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("ip", "netns", "exec", name, "nft", "list", "tables").CombinedOutput()
	tables := string(out)
	if !strings.Contains(tables, "weft-proxy\n") || strings.Contains(tables, "weft-proxy6") || strings.Contains(tables, "weft-node-dns") ||
		!strings.Contains(tables, "weft-hostport") {
		t.Fatalf("tables after cleanup:\n%s", tables)
	}
	out, _ = exec.Command("ip", "-n", name, "addr", "show", "dev", "lo").CombinedOutput()
	if strings.Contains(string(out), "169.254.20.10") {
		t.Fatalf("node-local DNS address left on lo:\n%s", out)
	}
}
