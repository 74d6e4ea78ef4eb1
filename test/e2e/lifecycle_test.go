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

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	out, _ := exec.Command("pgrep", "-af", "weft (agent|lab node|testserver|lb-ipam)|kube-apiserver|kube-controller-manager|kube-scheduler|etcd --data-dir").Output()
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
