package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ExecOptions says where and what to run.
type ExecOptions struct {
	Target    string // NAMESPACE/POD, a node name, or "outside"
	Container string
	Argv      []string
	Stdin     io.Reader
	Stdout    io.Writer
	Stderr    io.Writer
}

// Exec runs a command in a pod (its netns, hostname and DNS files), on a
// node, or in the outside namespace.
func (l *Lab) Exec(ctx context.Context, o ExecOptions) error {
	if len(o.Argv) == 0 {
		return fmt.Errorf("no command given")
	}
	st, err := l.LoadState()
	if err != nil {
		return err
	}
	var cmd *exec.Cmd
	switch {
	case o.Target == "outside":
		cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", OutsideNS}, o.Argv...)...)
	case !strings.Contains(o.Target, "/"):
		found := false
		for _, n := range st.Nodes {
			if n.Name == o.Target || strings.TrimPrefix(n.Name, "weft-") == o.Target {
				o.Target, found = n.Name, true
			}
		}
		if !found {
			return fmt.Errorf("no lab node %q (want NAMESPACE/POD, a node name or \"outside\")", o.Target)
		}
		cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", o.Target}, o.Argv...)...)
	default:
		spec, err := l.containerSpecPath(ctx, o.Target, o.Container)
		if err != nil {
			return err
		}
		cmd = exec.CommandContext(ctx, filepath.Join(l.binDir, "weft"), append([]string{"lab", "run-container", "--spec", spec, "--"}, o.Argv...)...)
		cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = o.Stdin, o.Stdout, o.Stderr
	return cmd.Run()
}

func (l *Lab) containerSpecPath(ctx context.Context, target, container string) (string, error) {
	parts := strings.SplitN(target, "/", 2)
	client, err := l.Client()
	if err != nil {
		return "", err
	}
	pod, err := client.CoreV1().Pods(parts[0]).Get(ctx, parts[1], metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if pod.Spec.NodeName == "" {
		return "", fmt.Errorf("pod %s is not scheduled yet", target)
	}
	if container == "" {
		container = pod.Spec.Containers[0].Name
	}
	path := filepath.Join(l.NodeDir(pod.Spec.NodeName), "pods", string(pod.UID), container+".spec.json")
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("container %q of pod %s is not running on %s", container, target, pod.Spec.NodeName)
	}
	return path, nil
}

// Status prints the lab's nodes and processes.
func (l *Lab) Status(ctx context.Context, w io.Writer) error {
	st, err := l.LoadState()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "lab up since %s (%s), %d nodes, %d rack(s)\n", st.Started.Format(time.RFC3339), time.Since(st.Started).Round(time.Second), len(st.Nodes), st.Racks)
	client, err := l.Client()
	if err != nil {
		return err
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("API server: %w", err)
	}
	fmt.Fprintf(w, "%-22s %-8s %-16s %-16s %s\n", "NODE", "READY", "INTERNAL-IP", "POD-CIDR", "PROCESSES")
	for _, n := range nodes.Items {
		ready := "False"
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				ready = string(c.Status)
			}
		}
		ip := ""
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ip = a.Address
			}
		}
		procs := []string{"agent:up", "node:up"}
		if !l.AgentRuns(n.Name) {
			procs[0] = "agent:DOWN"
		}
		if !l.procAlive("node-" + n.Name) {
			procs[1] = "node:DOWN"
		}
		fmt.Fprintf(w, "%-22s %-8s %-16s %-16s %s\n", n.Name, ready, ip, n.Spec.PodCIDR, strings.Join(procs, " "))
	}
	for _, p := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "outside-testserver"} {
		state := "up"
		if !l.procAlive(p) {
			state = "DOWN"
		}
		fmt.Fprintf(w, "%-24s %s\n", p, state)
	}
	fmt.Fprintf(w, "weft (kubectl -n kube-system get ds,deploy):\n")
	for _, name := range []string{"ds/weft-agent", "deploy/weft-dns", "deploy/weft-lb-ipam"} {
		fmt.Fprintf(w, "  %-22s %s\n", name, l.workloadState(ctx, client, name))
	}
	return nil
}

// workloadState is "ready/desired image" of a kube-system DaemonSet or
// Deployment named kind/name.
func (l *Lab) workloadState(ctx context.Context, client kubernetes.Interface, ref string) string {
	kind, name, _ := strings.Cut(ref, "/")
	if kind == "ds" {
		d, err := client.AppsV1().DaemonSets("kube-system").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("%d/%d ready, %d up to date, image %s", d.Status.NumberReady, d.Status.DesiredNumberScheduled,
			d.Status.UpdatedNumberScheduled, d.Spec.Template.Spec.Containers[0].Image)
	}
	d, err := client.AppsV1().Deployments("kube-system").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d/%d ready, image %s", d.Status.ReadyReplicas, d.Status.Replicas, d.Spec.Template.Spec.Containers[0].Image)
}
