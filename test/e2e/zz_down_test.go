//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"weft.dev/weft/internal/lab"
)

// TestZZLabDownLeavesNothing runs last (file and name order): `weft lab
// down` must leave no namespace, link, nftables table, mount, process or
// file of the lab.
func TestZZLabDownLeavesNothing(t *testing.T) {
	if reuse {
		t.Skip("WEFT_E2E_REUSE=1 keeps the lab up")
	}
	out, err := exec.Command(repoRoot+"/bin/weft", "lab", "down").CombinedOutput()
	if err != nil {
		t.Fatalf("weft lab down: %v: %s", err, out)
	}
	labDown = true
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), "weft-") && !onlyTestNS(string(out)) {
		t.Errorf("namespaces left: %s", out)
	}
	if out, _ := exec.Command("ip", "-o", "link", "show").Output(); strings.Contains(string(out), lab.HostLink) {
		t.Errorf("host link left: %s", out)
	}
	if out, _ := exec.Command("nft", "list", "tables").Output(); strings.Contains(string(out), "weft") {
		t.Errorf("nftables tables left on the host: %s", out)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, "weft-") {
			t.Errorf("mount left: %s", l)
		}
	}
	if _, err := os.Stat(lab.DefaultStateDir); err == nil {
		t.Errorf("%s left", lab.DefaultStateDir)
	}
	// Zombies are dead already; they wait only for the machine's init to reap them.
	var left []string
	out, _ = exec.Command("pgrep", "-af", "weft (agent|lab node|testserver|lb-ipam)|kube-apiserver|kube-controller-manager|kube-scheduler|etcd --data-dir").Output()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l == "" || strings.Contains(l, "pgrep") {
			continue
		}
		pid := strings.Fields(l)[0]
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		if i := strings.LastIndex(string(stat), ")"); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
			continue
		}
		left = append(left, l)
	}
	if len(left) > 0 {
		t.Errorf("processes left: %v", left)
	}
}

func onlyTestNS(list string) bool {
	for _, l := range strings.Split(list, "\n") {
		if strings.HasPrefix(l, "weft-") && !strings.HasPrefix(l, "weft-test-") {
			return false
		}
	}
	return true
}
