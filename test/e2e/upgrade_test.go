//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// nextImage is a second build of weft (`make lab-image-next`: the same
// source with another version, so other binaries and another digest).
const nextImage = "weft.dev/weft:next"

// Applying the manifests with a new image rolls the agent DaemonSet node
// by node while a pod sends ClusterIP, NodePort and pod-to-pod requests:
// none fails, every node ends on the new image, and no pod address leaks.
func TestRollingUpgradeUnderTraffic(t *testing.T) {
	dir := filepath.Join(repoRoot, "_output", "lab-image-next")
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		t.Fatalf("no second image in %s (make lab-image-next): %v", dir, err)
	}
	next, err := theLab.LoadImage(dir, nextImage)
	if err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(t)
	web := deployWeb(t, ns, 3)
	cli := createReady(t, pinnedPod(ns, "client", "weft-node-1"))["client"]
	urls := webService(t, ns, "web")
	for _, p := range web {
		if p.Spec.NodeName != cli.Spec.NodeName {
			urls = append(urls, "http://"+p.Status.PodIP+":8080/hostname")
			break
		}
	}
	eventually(t, 20*time.Second, "service reachable", func() error {
		_, err := execIn(t, ns+"/client", "", "curl", "-sf", "-m", "2", urls[0])
		return err
	})
	ctx := context.Background()
	before := agentPIDs(t)
	st, err := theLab.LoadState()
	if err != nil {
		t.Fatal(err)
	}
	stop := filepath.Join(os.TempDir(), "weft-upgrade-stop-"+ns)
	defer os.Remove(stop)
	type result struct{ ok, failed int }
	done := make(chan result, 1)
	go func() {
		ok, failed := trafficUntil(t, cli, stop, urls...)
		done <- result{ok, failed}
	}()
	time.Sleep(2 * time.Second)
	start := time.Now()
	if err := theLab.Install(ctx, client, theLab.ManifestConfig(st, nextImage)); err != nil {
		t.Fatal(err)
	}
	rollErr := waitRolledOut(ctx, nextImage, 4*time.Minute)
	took := time.Since(start)
	time.Sleep(2 * time.Second)
	if err := os.WriteFile(stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if rollErr != nil {
		t.Fatal(rollErr)
	}
	t.Logf("rolled %d agents to %s (%s) in %.0f s; %d requests succeeded, %d failed", len(before), nextImage, next.Digest[:19], took.Seconds(), r.ok, r.failed)
	if r.failed != 0 || r.ok == 0 {
		t.Fatalf("%d requests failed across the rolling upgrade (%d succeeded)", r.failed, r.ok)
	}
	after := agentPIDs(t)
	for node, pid := range before {
		if after[node] == 0 || after[node] == pid {
			t.Errorf("%s: agent pid %d before, %d after: not restarted", node, pid, after[node])
		}
		out, err := exec.Command("nsenter", "-t", strconv.Itoa(after[node]), "-m", "-r", "/usr/local/bin/weft", "version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "-next") {
			t.Errorf("%s: the agent's weft says %q (%v), want the -next build", node, out, err)
		}
	}
	checkNoLeakedAddresses(t)
}

// waitRolledOut waits until the agent DaemonSet runs image on every node,
// all available.
func waitRolledOut(ctx context.Context, image string, timeout time.Duration) error {
	var last string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		ds, err := client.AppsV1().DaemonSets("kube-system").Get(ctx, "weft-agent", metav1.GetOptions{})
		if err != nil {
			return err
		}
		s := ds.Status
		last = fmt.Sprintf("generation %d observed %d, %d desired, %d updated, %d available", ds.Generation, s.ObservedGeneration,
			s.DesiredNumberScheduled, s.UpdatedNumberScheduled, s.NumberAvailable)
		if ds.Spec.Template.Spec.Containers[0].Image == image && s.ObservedGeneration >= ds.Generation &&
			s.UpdatedNumberScheduled == s.DesiredNumberScheduled && s.NumberAvailable == s.DesiredNumberScheduled && s.DesiredNumberScheduled > 0 {
			return nil
		}
	}
	return fmt.Errorf("agent DaemonSet not rolled out to %s after %s: %s", image, timeout, last)
}

func agentPIDs(t *testing.T) map[string]int {
	t.Helper()
	st, err := theLab.LoadState()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int{}
	for _, n := range st.Nodes {
		if m[n.Name] = theLab.AgentPID(n.Name); m[n.Name] == 0 {
			t.Fatalf("no agent runs on %s", n.Name)
		}
	}
	return m
}

// trafficUntil sends requests to urls from a pod, in turn, until the file
// stop exists (the pod sees the machine's /tmp), and counts the outcomes.
func trafficUntil(t *testing.T, from *corev1.Pod, stop string, urls ...string) (ok, failed int) {
	script := fmt.Sprintf(`ok=0; fail=0; while [ ! -e %s ]; do
for u in %s; do if w=$(curl -sf -m 2 -o /dev/null -w '%%{time_connect} %%{time_starttransfer}' "$u"); then ok=$((ok+1)); else rc=$?; fail=$((fail+1)); echo "failed: $u (curl exit $rc at $(date +%%T.%%N), connected after $w s)" >&2; fi; done; sleep 0.05; done; echo $ok $fail`,
		stop, strings.Join(urls, " "))
	spec := filepath.Join(theLab.NodeDir(from.Spec.NodeName), "pods", string(from.UID), from.Spec.Containers[0].Name+".spec.json")
	cmd := exec.Command(repoRoot+"/bin/weft", "lab", "run-container", "--spec", spec, "--", "sh", "-c", script)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	f := strings.Fields(string(b))
	if err != nil || len(f) != 2 {
		t.Errorf("traffic loop: %v %q %s", err, b, stderr.String())
		return 0, 1
	}
	if stderr.Len() > 0 {
		t.Logf("traffic loop: %s", stderr.String())
	}
	ok, _ = strconv.Atoi(f[0])
	failed, _ = strconv.Atoi(f[1])
	return ok, failed
}

// checkNoLeakedAddresses compares each node's weft-cni address store with
// the pod-network pods the API server has on that node.
func checkNoLeakedAddresses(t *testing.T) {
	t.Helper()
	eventually(t, 60*time.Second, "address stores match the pods", func() error {
		pods, err := client.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return err
		}
		want := map[string][]string{}
		for _, p := range pods.Items {
			if !p.Spec.HostNetwork && p.Status.PodIP != "" && p.DeletionTimestamp == nil {
				want[p.Spec.NodeName] = append(want[p.Spec.NodeName], p.Status.PodIP)
			}
		}
		st, err := theLab.LoadState()
		if err != nil {
			return err
		}
		for _, n := range st.Nodes {
			entries, _ := os.ReadDir(filepath.Join(theLab.NodeRoot(n.Name), "var", "lib", "weft", "cni", "weft"))
			var held []string
			for _, e := range entries {
				if !strings.HasPrefix(e.Name(), ".") {
					held = append(held, e.Name())
				}
			}
			sort.Strings(held)
			sort.Strings(want[n.Name])
			if strings.Join(held, " ") != strings.Join(want[n.Name], " ") {
				return fmt.Errorf("%s holds %v, its pods have %v", n.Name, held, want[n.Name])
			}
		}
		return nil
	})
}
