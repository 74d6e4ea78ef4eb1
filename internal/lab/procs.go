package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// startProc starts a long-running lab process inside netns ns, detached
// from the caller (its own session), logging to logs/NAME.log, with its
// PID in pids/NAME.pid for `weft lab down`.
func (l *Lab) startProc(name, ns string, argv []string, env []string) error {
	logPath := filepath.Join(l.dir, "logs", name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	// nsenter (not `ip netns exec`) keeps the host mount namespace, so pod
	// netns the lab node pins under /run/netns are visible to the host.
	full := append([]string{"nsenter", "--net=/run/netns/" + ns, "--"}, argv...)
	cmd := exec.Command(full[0], full[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	// Reap it if it exits while we run (tests start the lab in-process);
	// once `weft lab up` exits, init adopts and reaps it.
	go func() { _ = cmd.Wait() }()
	return os.WriteFile(filepath.Join(l.dir, "pids", name+".pid"), []byte(strconv.Itoa(pid)), 0o644)
}

// procAlive reports whether the named process still runs.
func (l *Lab) procAlive(name string) bool {
	b, err := os.ReadFile(filepath.Join(l.dir, "pids", name+".pid"))
	if err != nil {
		return false
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid > 0 && syscall.Kill(pid, 0) == nil && !isZombie(pid)
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndex(s, ")")
	return i > 0 && len(s) > i+2 && s[i+2] == 'Z'
}

// killNetNSProcesses kills every process whose network namespace is one
// of the lab's (weft-*), catching pods and anything a crashed run left.
func killNetNSProcesses(sig syscall.Signal) int {
	inodes := map[uint64]bool{}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "weft-") || strings.HasPrefix(e.Name(), "weft-test-") {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/run/netns", e.Name()), &st) == nil {
			inodes[st.Ino] = true
		}
	}
	if len(inodes) == 0 {
		return 0
	}
	procs, _ := os.ReadDir("/proc")
	n := 0
	self := os.Getpid()
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == self {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil {
			continue
		}
		if inodes[st.Ino] {
			if syscall.Kill(pid, sig) == nil {
				n++
			}
		}
	}
	return n
}

// stopAll stops the recorded processes and anything else in lab netns.
func (l *Lab) stopAll() {
	entries, _ := os.ReadDir(filepath.Join(l.dir, "pids"))
	var pids []int
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(l.dir, "pids", e.Name()))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			pids = append(pids, pid)
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	killNetNSProcesses(syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		alive := false
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil && !isZombie(pid) {
				alive = true
			}
		}
		if !alive {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for i := 0; i < 20 && killNetNSProcesses(syscall.SIGKILL) > 0; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	l.killStrays()
}

// killStrays kills processes of the lab's programs (bin/weft, the
// control-plane cache's binaries, loaded images) living outside this process's network
// namespace (the host's: the lab is run from it) whose namespace is no longer mounted: a container whose pod's
// netns was removed under it, which killNetNSProcesses cannot find.
func (l *Lab) killStrays() {
	var host syscall.Stat_t
	if syscall.Stat("/proc/self/ns/net", &host) != nil {
		return
	}
	// Containers of loaded images run from roots under the state dir.
	dirs := []string{l.binDir + "/", l.ControlPlaneBinDir() + "/", l.dir + "/"}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || !slices.ContainsFunc(dirs, func(d string) bool { return strings.HasPrefix(exe, d) }) {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil || st.Ino == host.Ino {
			continue
		}
		if !netnsMounted(st.Ino) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// netnsMounted reports whether a network namespace is pinned under
// /run/netns (the lab's, a test's, or anyone else's).
func netnsMounted(ino uint64) bool {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/run/netns", e.Name()), &st) == nil && st.Ino == ino {
			return true
		}
	}
	return false
}

var errNotUp = errors.New("the lab is not up (run `weft lab up`)")
