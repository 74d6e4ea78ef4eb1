// Command coredns is CoreDNS built from its Go module with the plugins a
// Kubernetes cluster DNS uses (kubernetes, cache, forward, errors; multisocket
// for its best UDP throughput), in the
// order CoreDNS itself chains them: the baseline of weft dns's benchmark.
// With hosts and log it also stands in for the /coredns binary of the agnhost
// image, which upstream e2e specs run as a test DNS server.
// It lives in its own module so weft's go.mod stays free of CoreDNS.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/multisocket"
)

func init() {
	dnsserver.Directives = []string{"multisocket", "errors", "log", "cache", "hosts", "kubernetes", "forward"}
}

func main() { coremain.Run() }
