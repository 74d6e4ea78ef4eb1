//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"weft.dev/weft/internal/agent"
	"weft.dev/weft/internal/lab"
)

// The lab's own life cycle is checked after every test has run, from
// TestMain, so no test depends on running first or last (and -run picks
// any subset): a crash of every lab process followed by `weft lab up`,
// then `weft lab down` leaving nothing behind.

// upAfterCrash kills every lab process with SIGKILL (as a crash would)
// and checks that the next `weft lab up` clears the leftovers and comes up
// with every node Ready.
func upAfterCrash() error {
	pids, _ := filepath.Glob(filepath.Join(lab.DefaultStateDir, "pids", "*.pid"))
	if len(pids) == 0 {
		return errors.New("no lab processes recorded")
	}
	for _, p := range pids {
		b, _ := os.ReadFile(p)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	out, err := exec.Command(repoRoot+"/bin/weft", "lab", "up", "--nodes", "3", "--racks", "2").CombinedOutput()
	if err != nil {
		return fmt.Errorf("lab up after crash: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "removed") {
		return fmt.Errorf("up did not report removing leftovers:\n%s", out)
	}
	// The new lab has a new CA: a fresh client.
	c, err := theLab.Client()
	if err != nil {
		return err
	}
	nodes, err := c.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return err
	}
	if len(nodes.Items) != 4 {
		return fmt.Errorf("%d nodes after re-up, want 4", len(nodes.Items))
	}
	return nil
}

// downLeavesNothing: `weft lab down` must leave no namespace, link,
// nftables table, mount, process or file of the lab.
func downLeavesNothing() error {
	var errs []error
	if out, err := exec.Command(repoRoot+"/bin/weft", "lab", "down").CombinedOutput(); err != nil {
		return fmt.Errorf("weft lab down: %v: %s", err, out)
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), "weft-") && !onlyTestNS(string(out)) {
		errs = append(errs, fmt.Errorf("namespaces left: %s", out))
	}
	if out, _ := exec.Command("ip", "-o", "link", "show").Output(); strings.Contains(string(out), lab.HostLink) {
		errs = append(errs, fmt.Errorf("host link left: %s", out))
	}
	if out, _ := exec.Command("nft", "list", "tables").Output(); strings.Contains(string(out), "weft") {
		errs = append(errs, fmt.Errorf("nftables tables left on the host: %s", out))
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, "weft-") {
			errs = append(errs, fmt.Errorf("mount left: %s", l))
		}
	}
	if _, err := os.Stat(lab.DefaultStateDir); err == nil {
		errs = append(errs, fmt.Errorf("%s left", lab.DefaultStateDir))
	}
	if left := labProcesses(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("processes left: %v", left))
	}
	return errors.Join(errs...)
}

// labProcesses lists live lab processes (zombies are dead already; they
// wait only for the machine's init to reap them).
func labProcesses() []string {
	var left []string
	out, _ := exec.Command("pgrep", "-af", "weft (agent|lab node|testserver|lb-ipam|ingress|dns)|kube-apiserver|kube-controller-manager|kube-scheduler|etcd --data-dir").Output()
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
	return left
}

func onlyTestNS(list string) bool {
	for _, l := range strings.Split(list, "\n") {
		if strings.HasPrefix(l, "weft-") && !strings.HasPrefix(l, "weft-test-") {
			return false
		}
	}
	return true
}

// uninstallLeavesNothing uninstalls weft as a user does: deletes the
// agent DaemonSet (its pods get SIGTERM), then runs `weft agent cleanup`
// on each node with the node's directories, and checks that no weft
// table, link, route, address or file is left there.
func uninstallLeavesNothing() error {
	st, err := theLab.LoadState()
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := client.AppsV1().DaemonSets("kube-system").Delete(ctx, "weft-agent", metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("delete the agent DaemonSet: %w", err)
	}
	var errs []error
	cleaned := 0
	for _, n := range st.Nodes {
		if err := waitNoAgent(n.Name, time.Minute); err != nil {
			return err
		}
		root := theLab.NodeRoot(n.Name)
		cfg := map[string]string{"conf": filepath.Join(root, "etc", "cni", "net.d"), "runtime": filepath.Join(root, "run", "weft", "cni-runtime.json"),
			"data": filepath.Join(root, "var", "lib", "weft", "cni"), "bin": filepath.Join(root, "opt", "cni", "bin")}
		inNode := func(argv ...string) (string, error) {
			out, err := exec.Command("nsenter", append([]string{"--net=/run/netns/" + n.Name, "--"}, argv...)...).CombinedOutput()
			return string(out), err
		}
		before, _ := inNode("nft", "list", "tables")
		if !strings.Contains(before, "table inet weft-proxy\n") {
			return fmt.Errorf("%s: no weft-proxy table before cleanup: the check could not fail", n.Name)
		}
		if _, err := os.Stat(filepath.Join(cfg["bin"], "weft-cni")); err != nil {
			return fmt.Errorf("%s: weft-cni was not installed before cleanup: the check could not fail", n.Name)
		}
		if out, err := inNode(repoRoot+"/bin/weft", "agent", "cleanup", "--cni-conf-dir="+cfg["conf"],
			"--cni-runtime-config="+cfg["runtime"], "--cni-data-dir="+cfg["data"], "--cni-bin-dir="+cfg["bin"]); err != nil {
			errs = append(errs, fmt.Errorf("%s: weft agent cleanup: %v\n%s", n.Name, err, out))
			continue
		}
		cleaned++
		tables := must(inNode("nft", "list", "tables"))
		for _, tbl := range agent.AgentTables() {
			if strings.Contains(tables, "table inet "+tbl+"\n") {
				errs = append(errs, fmt.Errorf("%s: table %s left", n.Name, tbl))
			}
		}
		for _, c := range []struct{ what, left string }{
			{"links", grepLines(must(inNode("ip", "-o", "link", "show")), ": weft")},
			{"IPv4 routes of weft", must(inNode("ip", "-4", "route", "show", "table", "all", "proto", "77"))},
			{"IPv6 routes of weft", must(inNode("ip", "-6", "route", "show", "table", "all", "proto", "77"))},
			{"link-local address on lo", grepLines(must(inNode("ip", "-4", "addr", "show", "dev", "lo")), "169.254.")},
		} {
			if strings.TrimSpace(c.left) != "" {
				errs = append(errs, fmt.Errorf("%s: %s left: %s", n.Name, c.what, c.left))
			}
		}
		for _, f := range []string{filepath.Join(cfg["conf"], "10-weft.conflist"), cfg["runtime"], filepath.Join(root, "run", "weft", "policy.sock"),
			cfg["data"], filepath.Join(cfg["bin"], "weft-cni")} {
			if _, err := os.Stat(f); err == nil {
				errs = append(errs, fmt.Errorf("%s: %s left", n.Name, f))
			}
		}
	}
	if cleaned == 0 && len(errs) == 0 {
		return errors.New("no node was cleaned")
	}
	return errors.Join(errs...)
}

// waitNoAgent waits until no agent runs on node.
func waitNoAgent(node string, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if !theLab.AgentRuns(node) {
			return nil
		}
	}
	return fmt.Errorf("%s: the agent still runs %s after its DaemonSet was deleted", node, timeout)
}

// stopAndWait sends SIGTERM and waits up to 10 s for the process to end.
func stopAndWait(pid int) error {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 100; i++ {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil
		}
		if j := strings.LastIndex(string(stat), ")"); j > 0 && len(stat) > j+2 && stat[j+2] == 'Z' {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("process %d still runs 10 s after SIGTERM", pid)
}

func must(s string, _ error) string { return s }

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
