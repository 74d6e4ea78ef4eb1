//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"weft.dev/weft/internal/lab"
)

// leakedIPs lists the addresses weft-cni's store on node holds that no pod
// on the node has (other tests' pods and the cluster DNS may run there).
func leakedIPs(t *testing.T, node string) []string {
	t.Helper()
	pods, err := client.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, p := range pods.Items {
		for _, ip := range p.Status.PodIPs {
			used[ip.IP] = true
		}
	}
	entries, err := os.ReadDir(strings.TrimSuffix(ipamFile(node, ""), "/"))
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, e := range entries {
		if net.ParseIP(e.Name()) != nil && !used[e.Name()] {
			ips = append(ips, e.Name())
		}
	}
	return ips
}

// Pods created and deleted in batches (WEFT_CHURN_PODS in all, 1,000 by
// default) while CNI plugins are killed with SIGKILL at random and the
// agents now and then: no two running pods ever share an address, and once
// all are gone and the agents have reclaimed, the store holds only the
// addresses of pods still on the node. Kills fall in the first killWindow
// of each batch's creation and half that of its deletion: on a slow machine
// a plugin killed every 60 ms on average may never finish an ADD, and the
// test is of recovery, not of starvation.
func TestCNIChurnWithKills(t *testing.T) {
	total := 1000
	if v, err := strconv.Atoi(os.Getenv("WEFT_CHURN_PODS")); err == nil && v > 0 {
		total = v
	}
	ns := newNamespace(t)
	ctx := context.Background()
	nodes := []string{"weft-node-1", "weft-node-2"}
	killer := startChurnKiller(t, nodes)
	const batch = 50
	start := time.Now()
	for done := 0; done < total; done += batch {
		killer.killFor(killWindow)
		for i := 0; i < batch; i++ {
			p := pinnedPod(ns, fmt.Sprintf("c%04d", done+i), nodes[i%len(nodes)])
			p.Spec.Containers[0].ReadinessProbe = nil
			if _, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, 3*time.Minute, fmt.Sprintf("batch at %d running with distinct addresses", done), func() error {
			list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			owner := map[string]string{}
			running := 0
			for _, p := range list.Items {
				if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
					continue
				}
				running++
				if o, dup := owner[p.Status.PodIP]; dup {
					t.Fatalf("pods %s and %s both have %s", o, p.Name, p.Status.PodIP)
				}
				owner[p.Status.PodIP] = p.Name
			}
			if running < batch {
				return fmt.Errorf("%d of %d running", running, batch)
			}
			return nil
		})
		killer.killFor(killWindow / 2)
		if err := client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Minute, "batch gone", func() error {
			list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil || len(list.Items) > 0 {
				return fmt.Errorf("%d pods left %v", len(list.Items), err)
			}
			return nil
		})
	}
	kills := killer.stop()
	t.Logf("%d pods created and deleted in %s; %d kill -9 of weft-cni processes", total, time.Since(start).Round(time.Second), kills)
	leakedBefore := 0
	for _, n := range nodes {
		leakedBefore += len(leakedIPs(t, n))
	}
	eventually(t, 90*time.Second, "every address reclaimed", func() error {
		for _, n := range nodes {
			if ips := leakedIPs(t, n); len(ips) > 0 {
				return fmt.Errorf("%s still holds %v, which no pod has", n, ips)
			}
		}
		return nil
	})
	t.Logf("%d addresses held after the churn, all reclaimed", leakedBefore)
}

// killWindow is how long into each batch plugins and agents are killed.
const killWindow = 45 * time.Second

// churnKiller kills every weft-cni process every 20–100 ms and, every 15 s,
// one of the nodes' agents (restarted half a second later), while the
// window killFor opened lasts.
type churnKiller struct {
	until   atomic.Int64 // unix nanoseconds the window ends
	done    chan struct{}
	killed  chan int
	stopped sync.Once
	kills   int
}

// startChurnKiller starts the killer with its window closed; a test that
// fails early still stops it (t.Cleanup), so no later test runs among kills.
func startChurnKiller(t *testing.T, nodes []string) *churnKiller {
	k := &churnKiller{done: make(chan struct{}), killed: make(chan int, 1)}
	go k.run(t, nodes)
	t.Cleanup(func() { k.stop() })
	return k
}

func (k *churnKiller) killFor(d time.Duration) { k.until.Store(time.Now().Add(d).UnixNano()) }

// stop ends the killer after any agent it killed is restarted and returns
// how many plugin kills it made.
func (k *churnKiller) stop() int {
	k.stopped.Do(func() {
		close(k.done)
		k.kills = <-k.killed
	})
	return k.kills
}

func (k *churnKiller) run(t *testing.T, nodes []string) {
	r := rand.New(rand.NewSource(7))
	n, lastAgent := 0, time.Now()
	for {
		select {
		case <-k.done:
			k.killed <- n
			return
		case <-time.After(time.Duration(20+r.Intn(80)) * time.Millisecond):
		}
		if time.Now().UnixNano() > k.until.Load() {
			continue
		}
		if exec.Command("pkill", "-9", "-x", "weft-cni").Run() == nil {
			n++
		}
		if time.Since(lastAgent) > 15*time.Second {
			lastAgent = time.Now()
			node := nodes[r.Intn(len(nodes))]
			if theLab.KillNodeProcess(node, lab.ProcAgent, syscall.SIGKILL) == nil {
				time.Sleep(500 * time.Millisecond)
				if err := theLab.StartNodeProcess(node, lab.ProcAgent); err != nil {
					t.Errorf("restart agent on %s: %v", node, err)
				}
			}
		}
	}
}
