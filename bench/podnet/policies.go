package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"weft.dev/weft/bench/internal/figure"
)

// policyPhase is the same pod→pod measurement with n NetworkPolicies that
// all select the server pod: n-1 let an address block in on a port (each
// its own /32 and port: real set elements on the server's node), one lets
// the client in. The server's packets are judged by weft's NetworkPolicy
// chains; the bare set-up has no policy.
type policyPhase struct {
	ratio, rel [2]figure.Rounds
	fast       string // what the fast path did during the phase (fastpath.go)
}

// isolateServer creates the policies and waits until they hold: node a's
// own address (no pod, no allowed block) is refused by the server while
// the client still gets through.
func isolateServer(ctx context.Context, client kubernetesClient, ns, serverIP, fromNode string, n int) error {
	tcp := corev1.ProtocolTCP
	np := client.NetworkingV1().NetworkPolicies(ns)
	server := metav1.LabelSelector{MatchLabels: map[string]string{"role": "server"}}
	for i := 0; i < n-1; i++ {
		block := netip.AddrFrom4([4]byte{192, 168, byte(i / 250), byte(1 + i%250)})
		p := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("tenant-%d", i)},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: server, Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: block.String() + "/32"}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptr.To(intstr.FromInt32(int32(8000 + i%100)))}}}}}}
		if _, err := np.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	allow := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "allow-client"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: server, Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}}}}}}
	if _, err := np.Create(ctx, allow, metav1.CreateOptions{}); err != nil {
		return err
	}
	url := "http://" + serverIP + ":8080/hostname"
	last := ""
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		_, nodeErr := labExec(fromNode, "curl", "-s", "-m", "1", url)
		out, err := labExec(ns+"/client", "curl", "-s", "-m", "1", url)
		if nodeErr != nil && err == nil && strings.TrimSpace(out) == "server" {
			return nil
		}
		last = fmt.Sprintf("from %s: %v; from the client: %v %q", fromNode, nodeErr, err, strings.TrimSpace(out))
	}
	return fmt.Errorf("%d NetworkPolicies not enforced within a minute (last: %s)", n, last)
}

// removePolicies deletes every NetworkPolicy of ns and waits until node a
// reaches the server again.
func removePolicies(ctx context.Context, client kubernetesClient, ns, serverIP, fromNode string) error {
	if err := client.NetworkingV1().NetworkPolicies(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		return err
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if _, err := labExec(fromNode, "curl", "-s", "-m", "1", "http://"+serverIP+":8080/hostname"); err == nil {
			return nil
		}
	}
	return fmt.Errorf("server still isolated a minute after its policies were deleted")
}

// measurePolicies runs policyRounds rounds of the four runs with the
// policies in place, then deletes them.
func measurePolicies(ctx context.Context, client kubernetesClient, ns, serverIP, a string, runs []iperfRun) (*policyPhase, error) {
	if err := isolateServer(ctx, client, ns, serverIP, a, policies); err != nil {
		return nil, err
	}
	ph := &policyPhase{}
	for round := 0; round < policyRounds; round++ {
		for i, streams := range streamCounts {
			var got [4]figure.Figure
			for k, run := range runs {
				got[k] = iperf(run.from, run.host, run.port, streams)
			}
			weft := figure.Div(got[1], got[0])
			ph.ratio[i].Add(weft)
			ph.rel[i].Add(figure.Div(weft, figure.Div(got[3], got[2])))
		}
	}
	return ph, removePolicies(ctx, client, ns, serverIP, a)
}

// reportPolicies prints the policy phase's table and its targets, as the
// main table's: weft/bare for the overlays, pod/node for the routed
// backends.
func reportPolicies(rows []row) {
	if len(rows) == 0 || rows[0].pol == nil {
		return
	}
	fmt.Printf("With %d NetworkPolicies selecting the server pod (%d letting a /32 in on a port each, one letting the client in), after the rounds above, in the same lab: %d more rounds of the same four runs (no conntrack floor, no RR); the bare set-up has no policy. weft/bare without: the table above.\n\n", policies, policies-1, policyRounds)
	fmt.Println("| backend | pair | streams | weft pod/node (IQR) | weft/bare (IQR) | weft/bare without |")
	fmt.Println("| --- | --- | --- | --- | --- | --- |")
	for _, r := range rows {
		for i, n := range streamCounts {
			fmt.Printf("| %s | %s | %d | %s (%s) | %s (%s) | %s |\n", r.backend, r.pair, n, r.pol.ratio[i].Median().Format("%.2f"), r.pol.ratio[i].Spread("%.2f"),
				r.pol.rel[i].Median().Format("%.2f"), r.pol.rel[i].Spread("%.2f"), r.rel[i].Median().Format("%.2f"))
		}
	}
	fmt.Println()
	for _, r := range rows {
		fmt.Printf("- %s, %s, with the policies: %s\n", r.backend, r.pair, r.pol.fast)
	}
	fmt.Println()
	atLeast := func(x float64) bool { return x >= 0.95 }
	for _, r := range rows {
		for i, n := range streamCounts {
			if r.backend == "host-gw" || r.backend == "bgp" {
				fmt.Printf("- %s, %s, %d stream(s), with %d policies: pod/node ≥ 0.95: %s.\n", r.backend, r.pair, n, policies, r.pol.ratio[i].Median().Judge("%.3f", atLeast))
				continue
			}
			fmt.Printf("- %s, %s, %d stream(s), with %d policies: weft/bare ≥ 0.95: %s.\n", r.backend, r.pair, n, policies, r.pol.rel[i].Median().Judge("%.3f", atLeast))
		}
	}
	fmt.Println()
}
