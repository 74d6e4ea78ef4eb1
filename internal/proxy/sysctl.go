package proxy

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Conntrack holds the node's conntrack settings a service proxy depends
// on, with kube-proxy's defaults, so that connections through services
// behave as they do under kube-proxy.
type Conntrack struct {
	// TCPEstablished: how long an idle established TCP connection keeps
	// its entry (and so its DNAT). 0 leaves the kernel's value.
	TCPEstablished time.Duration
	// TCPCloseWait: how long an entry stays in CLOSE_WAIT. kube-proxy
	// raises it to an hour so that a half-closed connection through a
	// service is not cut by a short kernel default. 0 leaves it.
	TCPCloseWait time.Duration
	// TCPBeLiberal: out-of-window TCP packets stay part of their
	// connection instead of being marked invalid (see Config.TCPBeLiberal).
	TCPBeLiberal bool
	// MaxPerCore and Min size the conntrack table as kube-proxy does:
	// MaxPerCore × CPUs, at least Min. 0 leaves the kernel's value.
	MaxPerCore, Min int
}

// DefaultConntrack is kube-proxy's default configuration.
var DefaultConntrack = Conntrack{TCPEstablished: 24 * time.Hour, TCPCloseWait: time.Hour, MaxPerCore: 32768, Min: 131072}

// Max is the conntrack table size for a node with cores CPUs (0: leave it).
func (c Conntrack) Max(cores int) int {
	if c.MaxPerCore == 0 {
		return 0
	}
	return max(c.MaxPerCore*cores, c.Min)
}

// Sysctls returns the /proc/sys/net/netfilter settings, by file name, that
// c asks for.
func (c Conntrack) Sysctls() map[string]string {
	out := map[string]string{}
	if c.TCPEstablished > 0 {
		out["nf_conntrack_tcp_timeout_established"] = strconv.Itoa(int(c.TCPEstablished / time.Second))
	}
	if c.TCPCloseWait > 0 {
		out["nf_conntrack_tcp_timeout_close_wait"] = strconv.Itoa(int(c.TCPCloseWait / time.Second))
	}
	if c.TCPBeLiberal {
		out["nf_conntrack_tcp_be_liberal"] = "1"
	}
	return out
}

// ApplySysctls writes settings into dir (/proc/sys/net/netfilter on a
// node; the files are per network namespace). The files exist only once
// the conntrack module is loaded, which the proxy's own table does: call
// it after the first sync, and again now and then to repair drift.
func ApplySysctls(dir string, settings map[string]string) error {
	names := make([]string, 0, len(settings))
	for n := range settings {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		path := filepath.Join(dir, n)
		if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == settings[n] {
			continue
		}
		if err := os.WriteFile(path, []byte(settings[n]), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", path, err)
		}
	}
	return nil
}
