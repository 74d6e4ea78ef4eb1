package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"weft.dev/weft/internal/lab"
)

// userHZ is the unit of /proc/<pid>/stat's CPU times on Linux.
const userHZ = 100

type cpuTime struct {
	v   time.Duration
	err error
}

type count struct {
	f   float64
	err error
}

// agentsCPU sums the user and system time of every node's agent.
func agentsCPU(l *lab.Lab) cpuTime {
	var total time.Duration
	for _, n := range append([]string{"weft-control-plane"}, nodes...) {
		pid := l.AgentPID(n)
		if pid == 0 {
			return cpuTime{err: fmt.Errorf("no agent runs on %s", n)}
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return cpuTime{err: err}
		}
		// After the command's closing parenthesis: state is the first
		// field, utime the 12th and stime the 13th.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 {
			return cpuTime{err: fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))}
		}
		ut, err1 := strconv.ParseFloat(f[11], 64)
		st, err2 := strconv.ParseFloat(f[12], 64)
		if err1 != nil || err2 != nil {
			return cpuTime{err: fmt.Errorf("/proc/%d/stat: %v %v", pid, err1, err2)}
		}
		total += time.Duration((ut + st) / userHZ * float64(time.Second))
	}
	return cpuTime{v: total}
}

// agentMetric reads one metric of the agent on the server's node.
func agentMetric(name string) (float64, error) {
	out, err := exec.Command(filepath.Join(binDir, "weft"), "lab", "exec", server, "--", "sh", "-c",
		"curl -s http://127.0.0.1:9402/metrics").Output()
	if err != nil {
		return 0, fmt.Errorf("metrics: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == name {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	return 0, fmt.Errorf("no %s in the metrics", name)
}

// syncCount is how many policy table writes the server's node made.
func syncCount() count {
	n, err := agentMetric("weft_policy_sync_duration_seconds_count")
	return count{f: n, err: err}
}
