package proxy

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"sigs.k8s.io/knftables"

	"weft.dev/weft/internal/testutil"
)

// A full sync through the netlink element writer must leave exactly the
// table nft writes from the same ruleset in one transaction, and remove
// what an earlier (bigger) table had that the ruleset does not.
func TestPrivilegedBulkFullSyncEqualsWhole(t *testing.T) {
	testutil.RequireRoot(t)
	cfg := Config{NodeName: "n1", ClusterCIDRs: []*net.IPNet{mustCIDR("10.244.0.0/16")}, ServiceCIDRs: []*net.IPNet{mustCIDR("10.96.0.0/16")}}
	before := genPorts(60, 4)
	for e := 3; e < 7; e++ { // a service with 7 endpoints: more shared chains and bucket maps before
		before[59].Endpoints = append(before[59].Endpoints, Endpoint{IP: net.IPv4(10, 244, byte(e), 59).To4(), Port: 8080, Ready: true})
	}
	before[59].AllEndpoints = before[59].Endpoints
	after := genPorts(50, 4)
	after[4].Endpoints, after[4].AllEndpoints = nil, nil // rejected
	after[5].ExternalIPs = []net.IP{net.IPv4(203, 0, 113, 5).To4()}
	after[6].Protocol = "UDP"

	bulkNS, wholeNS := testutil.NewNetNS(t), testutil.NewNetNS(t)
	write := func(n ns.NetNS, bulk bool, m *Ruleset) {
		t.Helper()
		if err := n.Do(func(ns.NetNS) error {
			nft, err := knftables.New(knftables.InetFamily, TableName)
			if err != nil {
				return err
			}
			p := &Proxy{nft: nft, Bulk: &NetlinkElements{Table: TableName}}
			if bulk {
				return p.writeBulk(context.Background(), m)
			}
			return p.writeWhole(context.Background(), m)
		}); err != nil {
			t.Fatal(err)
		}
	}
	write(bulkNS, false, Compile(cfg, before))
	write(bulkNS, true, Compile(cfg, after))
	write(wholeNS, false, Compile(cfg, after))
	got, want := listTable(t, bulkNS), listTable(t, wholeNS)
	if got != want {
		t.Fatalf("bulk write differs from a whole write:\n--- bulk\n%s\n--- whole\n%s", got, want)
	}
	for _, s := range []string{"pick-ip-6", "s056", "10.96.0.59", "service-endpoints-6"} {
		if strings.Contains(got, s) {
			t.Errorf("stale %q left after the bulk full sync", s)
		}
	}
	for _, s := range []string{"203.0.113.5 . tcp . 80 : goto ext-ip-3", "10.96.0.6 . udp . 80 : goto dnat-ip-3", "10.96.0.4 . tcp . 80 : goto reject-chain", "10.96.0.49 . tcp . 80 : 10.244.2.49 . 8080"} {
		if !strings.Contains(got, s) {
			t.Errorf("bulk table lacks %q", s)
		}
	}
	// Same ruleset again: nothing changes (idempotent).
	write(bulkNS, true, Compile(cfg, after))
	if again := listTable(t, bulkNS); again != want {
		t.Fatalf("second bulk write changed the table:\n%s", again)
	}
}

var elemSep = regexp.MustCompile(`,\s*`)

// listTable lists the proxy table with one element or statement per line,
// sorted: nft prints elements in the kernel's hash order.
func listTable(t *testing.T, n ns.NetNS) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(n.Path()), "nft", "list", "table", "inet", TableName).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v %s", err, out)
	}
	var lines []string
	for _, l := range strings.Split(elemSep.ReplaceAllString(string(out), "\n"), "\n") {
		l = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(l), "elements = { "), " }")
		if l != "" {
			lines = append(lines, l)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
