// Command coredns is the benchmark baseline for weft dns: CoreDNS built from
// its Go module with the plugins a Kubernetes cluster DNS uses (kubernetes,
// cache, forward, errors), in the order CoreDNS itself chains them.
// It lives in its own module so weft's go.mod stays free of CoreDNS.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/kubernetes"
)

func init() {
	dnsserver.Directives = []string{"errors", "cache", "kubernetes", "forward"}
}

func main() { coremain.Run() }
