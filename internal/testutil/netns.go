// Package testutil holds helpers for privileged tests: throwaway network
// namespaces (named weft-test-PID-N so a later run can remove a crashed
// run's leftovers) and a gate that skips or fails tests that need root.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netns"
)

var counter atomic.Int64

// RequireRoot skips the test when not root, unless WEFT_REQUIRE_PRIVILEGED=1
// (set by CI), where a skip would hide missing coverage, so it fails.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("WEFT_REQUIRE_PRIVILEGED") == "1" {
		t.Fatal("privileged test needs root (WEFT_REQUIRE_PRIVILEGED=1)")
	}
	t.Skip("needs root")
}

// NewNetNS creates a named network namespace and removes it when t ends.
func NewNetNS(t testing.TB) ns.NetNS {
	t.Helper()
	name := fmt.Sprintf("weft-test-%d-%d", os.Getpid(), counter.Add(1))
	n, err := CreateNamedNetNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Close()
		_ = netns.DeleteNamed(name)
	})
	return n
}

// CreateNamedNetNS makes /run/netns/NAME without moving the caller into it.
func CreateNamedNetNS(name string) (ns.NetNS, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	if err != nil {
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	h.Close()
	if err := netns.Set(orig); err != nil {
		return nil, err
	}
	// Bring up loopback: pods and tests expect it.
	n, err := ns.GetNS(filepath.Join("/run/netns", name))
	if err != nil {
		return nil, err
	}
	_ = n.Do(func(ns.NetNS) error {
		return exec.Command("ip", "link", "set", "lo", "up").Run()
	})
	return n, nil
}

// RemoveStaleTestNetNS deletes weft-test-PID-* namespaces whose PID is dead,
// i.e. leftovers of a crashed test run.
func RemoveStaleTestNetNS() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "weft-test-") {
			continue
		}
		parts := strings.Split(e.Name(), "-")
		if len(parts) < 4 {
			continue
		}
		pid, err := strconv.Atoi(parts[2])
		if err != nil {
			continue
		}
		if syscall.Kill(pid, 0) == nil {
			continue
		}
		_ = netns.DeleteNamed(e.Name())
	}
}
