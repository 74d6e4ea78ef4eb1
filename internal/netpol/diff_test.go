package netpol

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/knftables"
)

// A table brought from one input to the next by WriteDiff equals the
// table a full Write of the next input makes, step after step: policies
// added, changed and removed, pods relabelled, added and deleted.
func TestDiffEqualsFullWrite(t *testing.T) {
	in := testInput()
	steps := diffSteps()
	diffed := knftables.NewFake(knftables.InetFamily, TableName)
	ctx := context.Background()
	var last *Ruleset
	for i, step := range append([]func(*Input){func(*Input) {}}, steps...) {
		step(&in)
		in.Pods = append([]*corev1.Pod(nil), in.Pods...)
		rs := Compile(in)
		tx := diffed.NewTransaction()
		if !WriteDiff(tx, last, rs) {
			if i > 0 {
				t.Fatalf("step %d: no diff possible", i)
			}
			Write(tx, rs)
		}
		if err := diffed.Run(ctx, tx); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		full := knftables.NewFake(knftables.InetFamily, TableName)
		ftx := full.NewTransaction()
		Write(ftx, rs)
		if err := full.Run(ctx, ftx); err != nil {
			t.Fatal(err)
		}
		if got, want := diffed.Dump(), full.Dump(); got != want {
			t.Fatalf("step %d: diffed table differs from a full write:\n--- diffed\n%s\n--- full\n%s", i, got, want)
		}
		last = rs
	}
}

// diffSteps change policies and pods one way after another.
func diffSteps() []func(*Input) {
	return []func(*Input){
		func(in *Input) { in.Policies = allTestPolicies() },
		func(in *Input) { in.Pods[2].Labels = map[string]string{"app": "b"} }, // c becomes a peer of "eg"
		func(in *Input) { in.Pods[0].Labels = map[string]string{"app": "z"} }, // a leaves "blocks"
		func(in *Input) { in.Pods = append(in.Pods, testPod("default", "d", "n1", "10.244.1.40", "a")) },
		func(in *Input) {
			in.Policies = append(in.Policies, policy("default", "deny", "", ingressOnly, nil, nil))
		},
		func(in *Input) {
			p := *in.Policies[0]
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{numPort(udp, 5353)}}}
			in.Policies[0] = &p
		},
		func(in *Input) { in.Pods = in.Pods[1:] },
		func(in *Input) { in.Policies = in.Policies[1:] },
		func(in *Input) { in.Policies = nil },
	}
}
