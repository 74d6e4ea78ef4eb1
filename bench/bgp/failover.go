package main

import (
	"context"
	"fmt"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"weft.dev/weft/bench/internal/figure"
	"weft.dev/weft/internal/lab"
)

// measureFailover brings up a bgp lab with BIRD and times, per round, how
// long the router routes a node's pod CIDR after the node's link went
// down, with BFD off and then on.
func measureFailover(bin string, rounds int) (noBFD, withBFD figure.Rounds) {
	l := lab.New(lab.DefaultStateDir, lab.DefaultCacheDir, bin, os.Stderr)
	defer l.Down()
	ctx := context.Background()
	if err := l.Up(ctx, lab.UpOptions{Workers: 3, Racks: 2, Backend: "bgp", Router: lab.RouterBIRD}); err != nil {
		noBFD.Add(figure.Missing("lab: %v", err))
		withBFD.Add(figure.Missing("lab: %v", err))
		return
	}
	client, err := l.Client()
	if err != nil {
		noBFD.Add(figure.Missing("client: %v", err))
		withBFD.Add(figure.Missing("client: %v", err))
		return
	}
	st, _ := l.LoadState()
	victim := st.Nodes[len(st.Nodes)-1]
	cidr := ""
	for _, on := range []bool{false, true} {
		got := &noBFD
		if on {
			got = &withBFD
		}
		if err := l.SetRackBFD(ctx, client, on); err != nil {
			got.Add(figure.Missing("BFD %v: %v", on, err))
			continue
		}
		if cidr == "" {
			n, err := client.CoreV1().Nodes().Get(ctx, victim.Name, metav1.GetOptions{})
			if err != nil {
				got.Add(figure.Missing("node: %v", err))
				continue
			}
			cidr = n.Spec.PodCIDR
		}
		for r := 0; r < rounds; r++ {
			got.Add(figure.Of(deadNode(l, victim, cidr)))
		}
	}
	return
}

// deadNode takes the node's link down, times the router's withdrawal,
// brings the link back and waits for the route to return.
func deadNode(l *lab.Lab, n lab.Node, cidr string) (float64, error) {
	if err := sh("ip", "-n", n.Name, "link", "set", "eth0", "down"); err != nil {
		return 0, err
	}
	start := time.Now()
	for lab.RouterRoute(cidr) != "" && time.Since(start) < 30*time.Second {
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	if err := sh("ip", "-n", n.Name, "link", "set", "eth0", "up"); err != nil {
		return 0, err
	}
	_ = sh("ip", "-n", n.Name, "route", "replace", "default", "via", lab.RackGateway(n.Rack).String())
	if took >= 30*time.Second {
		return 0, fmt.Errorf("still routed after 30 s")
	}
	for end := time.Now().Add(60 * time.Second); lab.RouterRoute(cidr) == ""; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			return 0, fmt.Errorf("route to %s not back within a minute", cidr)
		}
	}
	return took.Seconds(), nil
}
