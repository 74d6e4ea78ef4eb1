//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"weft.dev/weft/internal/manifests"
)

// deploy/weft.yaml, and the manifests with lb-ipam, pass the lab API
// server's validation and admission (server-side dry run): schemas, the
// admission policy's CEL, RBAC objects.
func TestManifestsPassServerDryRun(t *testing.T) {
	c := manifests.Defaults()
	c.LBPool = "198.19.100.0/24"
	withLB, err := manifests.Render(c)
	if err != nil {
		t.Fatal(err)
	}
	extra := filepath.Join(t.TempDir(), "with-lb.yaml")
	if err := os.WriteFile(extra, withLB, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(repoRoot, "deploy", "weft.yaml"), extra} {
		out, err := exec.Command(weftBin(), "lab", "kubectl", "apply", "--dry-run=server", "-f", f).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", f, err, out)
		}
		for _, want := range []string{"daemonset.apps/weft-agent", "validatingadmissionpolicy.admissionregistration.k8s.io/weft-agent-own-node", "deployment.apps/weft-dns"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("%s: dry run does not mention %s:\n%s", f, want, out)
			}
		}
	}
}
