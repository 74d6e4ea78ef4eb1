package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// fakeProcSys writes files under a temporary /proc/sys.
func fakeProcSys(t *testing.T, files map[string]string) string {
	root := t.TempDir()
	for p, v := range files {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestHostSysctlsWithoutIPv6(t *testing.T) {
	root := fakeProcSys(t, map[string]string{"net/ipv4/ip_forward": "0"})
	if err := applySysctls(root, hostSysctls(root)); err != nil {
		t.Fatalf("a node without IPv6: %v", err)
	}
	if got := readSysctl(root, "net/ipv4/ip_forward"); got != "1" {
		t.Fatalf("ip_forward %q", got)
	}
	if _, err := os.Stat(filepath.Join(root, "net/ipv6")); err == nil {
		t.Fatal("created IPv6 settings on a node without IPv6")
	}
}

func TestHostSysctlsKeepRouterAdvertisements(t *testing.T) {
	root := fakeProcSys(t, map[string]string{
		"net/ipv4/ip_forward":             "0",
		"net/ipv6/conf/all/forwarding":    "0",
		"net/ipv6/conf/all/accept_ra":     "1",
		"net/ipv6/conf/default/accept_ra": "1",
		"net/ipv6/conf/lo/accept_ra":      "1",
		"net/ipv6/conf/eth0/accept_ra":    "1",
		"net/ipv6/conf/eth1/accept_ra":    "0",
		"net/ipv6/conf/weftabc/accept_ra": "2",
	})
	got := hostSysctls(root)
	want := []sysctl{{"net/ipv4/ip_forward", "1"}, {"net/ipv6/conf/eth0/accept_ra", "2"}, {"net/ipv6/conf/all/forwarding", "1"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("settings %v, want %v (accept_ra=2 before forwarding)", got, want)
	}
	if err := applySysctls(root, got); err != nil {
		t.Fatal(err)
	}
	for p, v := range map[string]string{"net/ipv6/conf/eth0/accept_ra": "2", "net/ipv6/conf/eth1/accept_ra": "0", "net/ipv6/conf/all/forwarding": "1"} {
		if got := readSysctl(root, p); got != v {
			t.Errorf("%s = %q, want %q", p, got, v)
		}
	}
}

func TestRaiseConntrackMax(t *testing.T) {
	root := fakeProcSys(t, map[string]string{"net/netfilter/nf_conntrack_max": "65536"})
	if err := raiseConntrackMax(root, 131072); err != nil {
		t.Fatal(err)
	}
	if got := readSysctl(root, "net/netfilter/nf_conntrack_max"); got != "131072" {
		t.Fatalf("raised to %q, want 131072", got)
	}
	if err := raiseConntrackMax(root, 100000); err != nil {
		t.Fatal(err)
	}
	if got := readSysctl(root, "net/netfilter/nf_conntrack_max"); got != "131072" {
		t.Fatalf("lowered to %q: an operator's higher value must stand", got)
	}
	if err := raiseConntrackMax(t.TempDir(), 131072); err != nil {
		t.Fatalf("conntrack not loaded yet: %v", err)
	}
}
