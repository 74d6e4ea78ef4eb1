// Command bgp measures the bgp backend's control plane: the time to learn
// and install 1,000 pod CIDRs from a peer (the agent's GoBGP speaker and
// route table against a GoBGP "router" in two network namespaces), and,
// in a lab with BIRD as the rack router, how long a dead node's routes
// stay at the router with and without BFD. It prints a Markdown section;
// a figure that fails prints FAILED.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"weft.dev/weft/bench/internal/figure"
	"weft.dev/weft/internal/lab"
)

// The two namespaces of the install measurement (removed at the end, and
// by `weft lab up` when a crashed run left them: weft- prefix).
const (
	nodeNS   = "weft-bb-node"
	routerNS = "weft-bb-router"
	nodeIP   = "198.18.250.1"
	routerIP = "198.18.250.2"
)

func main() {
	role := flag.String("role", "", "internal: node or router (run inside the namespaces)")
	prefixes := flag.Int("prefixes", 1000, "pod CIDRs the router announces")
	rounds := flag.Int("rounds", 5, "rounds of each measurement")
	binDir := flag.String("bin", "bin", "directory with weft's binaries (lab part)")
	flag.Parse()
	switch *role {
	case "router":
		runRouter(*prefixes)
		return
	case "node":
		runNode(*prefixes)
		return
	}
	defer figure.Exit()
	install := measureInstall(*prefixes, *rounds)
	bin, _ := filepath.Abs(*binDir)
	noBFD, withBFD := measureFailover(bin, *rounds)
	report(*prefixes, *rounds, install, noBFD, withBFD)
}

func report(prefixes, rounds int, install, noBFD, withBFD figure.Rounds) {
	fmt.Printf("### BGP backend: routes learned, dead-node failover\n\n")
	fmt.Printf("`go run ./bench/bgp -bin bin -prefixes %d -rounds %d` (part of `make bench`), %s. ", prefixes, rounds, figure.Stamp())
	fmt.Printf("Install: the agent's BGP speaker (GoBGP) and route table in one network namespace, a GoBGP router announcing %d /24s in another; "+
		"time from the session's Established to the last route in the kernel (proto 77), per round with a fresh agent. "+
		"Failover: a lab (backend bgp, BIRD as the rack router, hold time %d s, BFD 100 ms × 3); a node's link goes down; time until the router's kernel table no longer routes its pod CIDR.\n\n", prefixes, lab.RouterHoldTime)
	fmt.Println("| measurement | median | IQR | target |")
	fmt.Println("| --- | --- | --- | --- |")
	fmt.Printf("| %d pod CIDRs learned and installed | %s s | %s | ≤ 1 s: %s |\n", prefixes, install.Median().Format("%.3f"), install.Spread("%.3f"),
		install.Median().Judge("%.3f s", func(x float64) bool { return x <= 1 }))
	fmt.Printf("| dead node, BFD off (hold time %d s) | %s s | %s | ≤ hold time: %s |\n", lab.RouterHoldTime, noBFD.Median().Format("%.2f"), noBFD.Spread("%.2f"),
		noBFD.Median().Judge("%.2f s", func(x float64) bool { return x <= float64(lab.RouterHoldTime)+0.5 }))
	fmt.Printf("| dead node, BFD on | %s s | %s | ≤ 1 s: %s |\n", withBFD.Median().Format("%.3f"), withBFD.Spread("%.3f"),
		withBFD.Median().Judge("%.3f s", func(x float64) bool { return x <= 1 }))
	fmt.Println()
}

func sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func removeNamespaces() {
	for _, ns := range []string{nodeNS, routerNS} {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
}

func setupNamespaces() error {
	removeNamespaces()
	for _, c := range [][]string{
		{"ip", "netns", "add", nodeNS}, {"ip", "netns", "add", routerNS},
		{"ip", "-n", nodeNS, "link", "set", "lo", "up"}, {"ip", "-n", routerNS, "link", "set", "lo", "up"},
		{"ip", "-n", nodeNS, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", routerNS},
		{"ip", "-n", nodeNS, "addr", "add", nodeIP + "/24", "dev", "eth0"}, {"ip", "-n", routerNS, "addr", "add", routerIP + "/24", "dev", "eth0"},
		{"ip", "-n", nodeNS, "link", "set", "eth0", "up"}, {"ip", "-n", routerNS, "link", "set", "eth0", "up"},
	} {
		if err := sh(c...); err != nil {
			return err
		}
	}
	return nil
}

// measureInstall runs a fresh node against the router per round.
func measureInstall(prefixes, rounds int) figure.Rounds {
	var out figure.Rounds
	if err := setupNamespaces(); err != nil {
		out.Add(figure.Missing("namespaces: %v", err))
		return out
	}
	defer removeNamespaces()
	self, _ := os.Executable()
	router := exec.Command("ip", "netns", "exec", routerNS, self, "-role", "router", "-prefixes", strconv.Itoa(prefixes))
	router.Stderr = os.Stderr
	if err := router.Start(); err != nil {
		out.Add(figure.Missing("router: %v", err))
		return out
	}
	defer func() { _ = router.Process.Kill(); _ = router.Wait() }()
	for r := 0; r < rounds; r++ {
		_ = sh("ip", "-n", nodeNS, "route", "flush", "proto", "77")
		out.Add(figure.Of(oneInstall(self, prefixes)))
	}
	return out
}

func oneInstall(self string, prefixes int) (float64, error) {
	node := exec.Command("ip", "netns", "exec", nodeNS, self, "-role", "node", "-prefixes", strconv.Itoa(prefixes))
	node.Stderr = os.Stderr
	stdout, _ := node.StdoutPipe()
	if err := node.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = node.Process.Kill(); _ = node.Wait() }()
	res := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "installed ") {
				res <- sc.Text()
				return
			}
		}
		res <- ""
	}()
	select {
	case line := <-res:
		var n int
		var secs float64
		if _, err := fmt.Sscanf(line, "installed %d in %f", &n, &secs); err != nil || n != prefixes {
			return 0, fmt.Errorf("node said %q", line)
		}
		return secs, nil
	case <-time.After(time.Minute):
		return 0, fmt.Errorf("no %d routes within a minute", prefixes)
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
