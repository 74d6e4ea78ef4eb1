//go:build e2e

package e2e

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// agentStats reads a node agent's resident memory (MiB) and goroutines.
func agentStats(t *testing.T, node string) (rssMiB, goroutines int) {
	t.Helper()
	pid := theLab.AgentPID(node)
	if pid == 0 {
		t.Fatalf("no agent runs on %s", node)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(status); m != nil {
		kb, _ := strconv.Atoi(string(m[1]))
		rssMiB = kb / 1024
	}
	nodeIP := nodeByName(t, node).Status.Addresses[0].Address
	out, err := execIn(t, node, "", "curl", "-sS", "-m", "3", "http://"+nodeIP+":9402/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^go_goroutines (\d+)`).FindStringSubmatch(out); m != nil {
		goroutines, _ = strconv.Atoi(m[1])
	}
	return rssMiB, goroutines
}

// A pod floods the node-local DNS cache with 1,000 queries/s of random
// names (every one a miss, forwarded) for 60 s; another pod on the node
// still resolves with p99 under 200 ms, and the agent's memory and
// goroutines stay bounded.
func TestDNSRandomSubdomainFlood(t *testing.T) {
	ns := newNamespace(t)
	createReady(t, pinnedPod(ns, "flood", "weft-node-1"), pinnedPod(ns, "victim", "weft-node-1"))
	names := filepath.Join(t.TempDir(), "names.txt")
	var b strings.Builder
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 65000; i++ {
		fmt.Fprintf(&b, "r%d-%x.example.org A\n", i, r.Int63())
	}
	if err := os.WriteFile(names, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	rss0, g0 := agentStats(t, "weft-node-1")
	flood := make(chan string, 1)
	go func() {
		out, _ := execInFor(t, 90*time.Second, ns+"/flood", "", "dnsperf", "-s", "169.254.20.10", "-d", names, "-Q", "1000", "-l", "60", "-t", "2", "-q", "2000")
		flood <- out
	}()
	time.Sleep(5 * time.Second)
	// The victim asks a cluster name up to 5 times a second for 50 s
	// meanwhile (bounded by time, not count: on a loaded machine each
	// round's processes take longer to start).
	out, err := execInFor(t, 90*time.Second, ns+"/victim", "", "sh", "-c",
		`end=$(( $(date +%s) + 50 )); while [ $(date +%s) -lt $end ]; do dig +tries=1 +time=2 kubernetes.default.svc.cluster.local | grep -o 'Query time: [0-9]*' || echo 'Query time: 2000'; sleep 0.2; done`)
	if err != nil {
		t.Fatalf("victim: %v %s", err, out)
	}
	rss1, g1 := agentStats(t, "weft-node-1")
	report := <-flood
	var ms []int
	for _, m := range regexp.MustCompile(`Query time: (\d+)`).FindAllStringSubmatch(out, -1) {
		v, _ := strconv.Atoi(m[1])
		ms = append(ms, v)
	}
	// At least a query a second: the loop's pace is the machine's (each
	// round starts dig and grep), not the cache's.
	if len(ms) < 50 {
		t.Fatalf("victim made %d queries:\n%s", len(ms), out)
	}
	sort.Ints(ms)
	p99 := ms[len(ms)*99/100]
	sent := regexp.MustCompile(`Queries sent:\s+(\d+)`).FindStringSubmatch(report)
	t.Logf("flood: %s queries sent in 60 s; victim p50 %d ms, p99 %d ms over %d queries; agent RSS %d → %d MiB, goroutines %d → %d",
		strings.Join(sent[1:], ""), ms[len(ms)/2], p99, len(ms), rss0, rss1, g0, g1)
	if sent == nil {
		t.Fatalf("dnsperf did not run:\n%s", report)
	}
	if n, _ := strconv.Atoi(sent[1]); n < 50000 {
		t.Errorf("the flood sent only %d queries: not a flood of 1,000/s", n)
	}
	if p99 >= 200 {
		t.Errorf("victim p99 %d ms under the flood, want < 200 ms", p99)
	}
	if rss1-rss0 > 100 || g1 > 3000 {
		t.Errorf("agent grew from %d to %d MiB and %d to %d goroutines under the flood", rss0, rss1, g0, g1)
	}
}
