package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// sysctl is one setting under /proc/sys, path relative to it.
type sysctl struct{ path, value string }

// hostSysctls is what this node needs, in order, given the tree under root
// (/proc/sys): IPv4 forwarding, and where the kernel has IPv6 (a node booted
// with ipv6.disable=1 has no net/ipv6) IPv6 forwarding. Forwarding makes the
// kernel ignore router advertisements on interfaces with accept_ra=1, which
// would lose the node's own IPv6 default route: those are set to 2 (accept
// even when forwarding) first.
func hostSysctls(root string) []sysctl {
	out := []sysctl{{"net/ipv4/ip_forward", "1"}}
	if _, err := os.Stat(filepath.Join(root, "net/ipv6")); err != nil {
		return out
	}
	ifaces, _ := os.ReadDir(filepath.Join(root, "net/ipv6/conf"))
	for _, e := range ifaces {
		switch e.Name() {
		case "all", "default", "lo":
			continue
		}
		p := filepath.Join("net/ipv6/conf", e.Name(), "accept_ra")
		if readSysctl(root, p) == "1" {
			out = append(out, sysctl{p, "2"})
		}
	}
	return append(out, sysctl{"net/ipv6/conf/all/forwarding", "1"})
}

func readSysctl(root, path string) string {
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// applySysctls writes each setting that differs, in order.
func applySysctls(root string, settings []sysctl) error {
	for _, s := range settings {
		if readSysctl(root, s.path) == s.value {
			continue
		}
		if err := os.WriteFile(filepath.Join(root, s.path), []byte(s.value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", s.path, err)
		}
	}
	return nil
}

// raiseConntrackMax sets net/netfilter/nf_conntrack_max to want when it is
// lower, never lowering it (kube-proxy's rule: an operator's higher value
// stands). In a network namespace other than the host's the kernel makes
// it read-only; the error says so and the caller logs it.
func raiseConntrackMax(root string, want int) error {
	p := "net/netfilter/nf_conntrack_max"
	cur, err := strconv.Atoi(readSysctl(root, p))
	if err != nil || cur >= want {
		return nil // conntrack not loaded yet, or high enough
	}
	return applySysctls(root, []sysctl{{p, strconv.Itoa(want)}})
}
