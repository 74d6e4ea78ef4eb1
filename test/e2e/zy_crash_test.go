//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"weft.dev/weft/internal/lab"
)

// TestZYUpAfterCrash kills every lab process with SIGKILL (as a crash
// would) and checks that the next `weft lab up` clears the leftovers and
// comes up with every node Ready.
func TestZYUpAfterCrash(t *testing.T) {
	if reuse {
		t.Skip("WEFT_E2E_REUSE=1 keeps the lab up")
	}
	pids, _ := filepath.Glob(filepath.Join(lab.DefaultStateDir, "pids", "*.pid"))
	if len(pids) == 0 {
		t.Fatal("no lab processes recorded")
	}
	for _, p := range pids {
		b, _ := os.ReadFile(p)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	out, err := exec.Command(repoRoot+"/bin/weft", "lab", "up", "--nodes", "3", "--racks", "2").CombinedOutput()
	if err != nil {
		t.Fatalf("lab up after crash: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "removed") {
		t.Errorf("up did not report removing leftovers:\n%s", out)
	}
	// The new lab has a new CA: build a fresh client.
	c, err := theLab.Client()
	if err != nil {
		t.Fatal(err)
	}
	client = c
	nodes, err := client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 4 {
		t.Fatalf("%d nodes after re-up, want 4", len(nodes.Items))
	}
}
