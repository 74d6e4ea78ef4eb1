package main

import (
	"os/exec"
	"strings"
	"testing"
)

// weft-cni runs once per pod operation: it must stay small and start fast,
// so it may not link the Kubernetes client libraries.
func TestNoKubernetesClientDependency(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Split(string(out), "\n")
	if len(deps) < 10 {
		t.Fatalf("suspiciously few deps: %v", deps)
	}
	for _, d := range deps {
		if strings.HasPrefix(d, "k8s.io/client-go") || strings.HasPrefix(d, "k8s.io/api/") || strings.HasPrefix(d, "k8s.io/apimachinery") {
			t.Errorf("weft-cni links %s", d)
		}
	}
}
