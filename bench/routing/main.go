// Command routing measures the pod network's control plane at scale: with
// 1,000 peer Node objects in the API server (API objects only: no kubelet,
// no namespace behind them), the time from a fresh agent start to every
// peer's route and FDB entry in the kernel, over rounds; and the netlink
// writes an idle agent does across its periodic reconciles (none wanted).
// It prints a Markdown section; a figure that fails prints FAILED.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"weft.dev/weft/bench/internal/figure"
	"weft.dev/weft/bench/internal/peers"
	"weft.dev/weft/internal/lab"
)

const node = "weft-node-1"

func main() {
	// Registered first, so it runs last: after every cleanup below.
	defer figure.Exit()
	binDir := flag.String("bin", "bin", "directory with weft and weft-cni")
	npeers := flag.Int("peers", 1000, "peer Node objects")
	rounds := flag.Int("rounds", 5, "agent restarts timed")
	idle := flag.Duration("idle", 16*time.Second, "how long the idle agent is watched (its reconcile runs every 5 s)")
	keep := flag.Bool("keep", false, "leave the lab up afterwards (to read its logs)")
	flag.Parse()
	bin, _ := filepath.Abs(*binDir)
	l := lab.New(lab.DefaultStateDir, lab.DefaultCacheDir, bin, os.Stderr)
	if !*keep {
		defer l.Down()
	}
	ctx := context.Background()
	check(l.Up(ctx, lab.UpOptions{Workers: 1, Racks: 1, Backend: "vxlan"}))
	client, err := l.Client()
	check(err)
	check(peers.Create(ctx, client, *npeers))
	_, err = waitProgrammed(*npeers, 5*time.Minute)
	check(err)

	var start figure.Rounds
	for r := 0; r < *rounds; r++ {
		check(l.KillNodeProcess(node, lab.ProcAgent, syscall.SIGTERM))
		// Nothing programmed: the VXLAN device takes its routes,
		// neighbours and FDB entries with it.
		check(run("ip", "-n", node, "link", "del", "weft.vxlan"))
		t0 := time.Now()
		check(l.StartNodeProcess(node, lab.ProcAgent))
		d, err := waitProgrammed(*npeers, time.Minute)
		start.Add(figure.Of(d.Sub(t0).Seconds(), err))
	}
	idleWrites := idleNetlinkWrites(*idle)

	fmt.Printf("### Pod network control plane at scale: %d peer nodes\n\n", *npeers)
	fmt.Printf("`go run ./bench/routing -bin bin` (part of `make bench`), %s. One lab node (vxlan backend) and %d more Node objects in the API server, each with an InternalIP, a /27 podCIDR and VTEP annotations; nothing behind them. ", figure.Stamp(), *npeers)
	fmt.Printf("Start: the agent on %s stopped, its VXLAN device deleted (with every route, neighbour and FDB entry), the agent started; time from the start to every peer's route and FDB entry in the kernel (polled every 10 ms), %d rounds. ", node, *rounds)
	fmt.Printf("Idle: netlink writes (`weft_routing_netlink_writes_total`) while nothing changes for %s, i.e. across %d periodic reconciles.\n\n", *idle, int(idle.Seconds()/5))
	fmt.Println("| figure | median | IQR | target |")
	fmt.Println("| --- | --- | --- | --- |")
	fmt.Printf("| agent start → %d peers programmed | %s | %s | ≤ 1 s: %s |\n", *npeers, start.Median().Format("%.3f s"), start.Spread("%.3f"),
		start.Median().Verdict(func(x float64) bool { return x <= 1 }))
	fmt.Printf("| netlink writes while idle | %s | — | 0: %s |\n\n", idleWrites.Format("%.0f"), idleWrites.Verdict(func(x float64) bool { return x == 0 }))
}

// waitProgrammed polls the node's kernel until every peer has its route
// and FDB entry.
func waitProgrammed(peers int, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	var routes, fdb int
	for time.Now().Before(deadline) {
		routes, fdb = count("ip", "-n", node, "route", "show", "root", "10.244.128.0/17"), count("bridge", "-n", node, "fdb", "show", "dev", "weft.vxlan")
		if routes >= peers && fdb >= peers {
			return time.Now(), nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("after %s: %d routes, %d FDB entries of %d peers", timeout, routes, fdb, peers)
}

func count(argv ...string) int {
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "10.244.") || strings.Contains(line, "dst 198.18.") {
			n++
		}
	}
	return n
}

// idleNetlinkWrites counts the agent's netlink writes over d.
func idleNetlinkWrites(d time.Duration) figure.Figure {
	before, err := writes()
	if err != nil {
		return figure.Missing("%v", err)
	}
	time.Sleep(d)
	after, err := writes()
	if err != nil {
		return figure.Missing("%v", err)
	}
	return figure.Count(after-before, nil)
}

func writes() (float64, error) {
	out, err := exec.Command("ip", "netns", "exec", node, "curl", "-s", "-m", "5", "http://127.0.0.1:9402/metrics").Output()
	if err != nil {
		return 0, fmt.Errorf("metrics: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "weft_routing_netlink_writes_total" {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	return 0, fmt.Errorf("no weft_routing_netlink_writes_total in the agent's metrics")
}

func run(argv ...string) error {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	return figure.WithOutput(err, out)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench routing:", err)
		os.Exit(1)
	}
}
