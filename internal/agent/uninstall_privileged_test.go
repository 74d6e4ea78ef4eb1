package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"weft.dev/weft/internal/agent/nodedns"
	"weft.dev/weft/internal/routing"
	"weft.dev/weft/internal/testutil"
)

// Uninstall removes weft's tables, links, routes, address and files from a
// node, and nothing that is not weft's.
func TestPrivilegedUninstallLeavesNothingOfWeft(t *testing.T) {
	testutil.RequireRoot(t)
	n := testutil.NewNetNS(t)
	name := filepath.Base(n.Path())
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"netns", "exec", name}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
		return string(out)
	}
	for _, tbl := range [][]string{{"inet", "weft-proxy"}, {"inet", "weft-policy"}, {"inet", "weft-masquerade"}, {"inet", "weft-lab-guard"}, {"ip", "other"}} {
		run("nft", "add", "table", tbl[0], tbl[1])
	}
	run("ip", "link", "add", "weft0123456789a", "type", "veth", "peer", "name", "pod-side")
	run("ip", "link", "add", VXLANDevice, "type", "vxlan", "id", "1", "dstport", "4789", "dev", "lo")
	run("ip", "link", "add", "weftbr0", "type", "bridge") // not a veth: not weft-cni's
	run("ip", "link", "add", "uplink", "type", "veth", "peer", "name", "uplink-peer")
	run("ip", "link", "set", "uplink", "up")
	run("ip", "addr", "add", "192.0.2.1/24", "dev", "uplink")
	run("ip", "route", "add", "10.244.7.0/24", "via", "192.0.2.7", "proto", "77")
	run("ip", "route", "add", "10.99.0.0/24", "via", "192.0.2.8") // someone else's

	dir := t.TempDir()
	cfg := UninstallConfig{CNIConfDir: filepath.Join(dir, "net.d"), CNIRuntimePath: filepath.Join(dir, "run", "weft", "cni-runtime.json"),
		CNIDataDir: filepath.Join(dir, "lib", "weft", "cni"), CNIBinDir: filepath.Join(dir, "bin")}
	files := map[string]bool{ // path → weft's
		filepath.Join(cfg.CNIConfDir, ConflistName):                       true,
		filepath.Join(cfg.CNIConfDir, "05-other.conflist"):                false,
		filepath.Join(cfg.CNIBinDir, "weft-cni"):                          true,
		filepath.Join(cfg.CNIBinDir, "bridge"):                            false,
		cfg.CNIRuntimePath:                                                true,
		filepath.Join(filepath.Dir(cfg.CNIRuntimePath), PolicySocketName): true,
		filepath.Join(cfg.CNIDataDir, CNINetworkName, "10.244.1.5"):       true,
		filepath.Join(cfg.CNIDataDir, "other-network", "10.0.0.5"):        false,
	}
	for f := range files {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	err := n.Do(func(ns.NetNS) error {
		if err := nodedns.EnsureAddress(net.ParseIP("169.254.20.10").To4()); err != nil {
			return err
		}
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		for i := 0; i < 2; i++ { // twice: nothing left to remove is fine
			if err := Uninstall(context.Background(), cfg, log); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	tables := run("nft", "list", "tables")
	for _, tbl := range AgentTables() {
		if strings.Contains(tables, "table inet "+tbl+"\n") {
			t.Errorf("table %s left:\n%s", tbl, tables)
		}
	}
	if !strings.Contains(tables, "table inet weft-lab-guard") || !strings.Contains(tables, "table ip other") {
		t.Errorf("a table not the agent's was removed:\n%s", tables)
	}
	linkExists := func(l string) bool {
		return exec.Command("ip", "-n", name, "link", "show", "dev", l).Run() == nil
	}
	for _, l := range []string{"weft0123456789a", VXLANDevice, "pod-side"} {
		if linkExists(l) {
			t.Errorf("link %s left", l)
		}
	}
	for _, l := range []string{"weftbr0", "uplink"} {
		if !linkExists(l) {
			t.Errorf("link %s, not weft's, was removed", l)
		}
	}
	routes := run("ip", "route", "show", "table", "all")
	if strings.Contains(routes, "10.244.7.0/24") || !strings.Contains(routes, "10.99.0.0/24") {
		t.Errorf("routes after uninstall (proto %d removed, others kept):\n%s", routing.RouteProtocol, routes)
	}
	if lo := run("ip", "addr", "show", "dev", "lo"); strings.Contains(lo, "169.254.20.10") {
		t.Errorf("node-local DNS address left on lo:\n%s", lo)
	}
	for f, ours := range files {
		_, err := os.Stat(f)
		if ours && err == nil {
			t.Errorf("%s left", f)
		}
		if !ours && err != nil {
			t.Errorf("%s, not weft's, is gone: %v", f, err)
		}
	}
	for _, d := range []string{filepath.Dir(cfg.CNIRuntimePath), filepath.Join(cfg.CNIDataDir, CNINetworkName)} {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("directory %s left", d)
		}
	}
}
