package kubelet

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probeLoop runs the readiness and liveness probes of one container for
// the life of the pod. Probes run from the node's namespace to the pod IP,
// as the kubelet's do; exec probes run inside the container's namespaces.
func (k *Kubelet) probeLoop(ctx context.Context, pod *corev1.Pod, pr *podRuntime, cr *containerRuntime) {
	if cr.spec.ReadinessProbe != nil {
		go k.runProbe(ctx, pod, pr, cr, cr.spec.ReadinessProbe, func(ok bool) {
			pr.mu.Lock()
			changed := cr.ready != ok && cr.running
			if cr.running {
				cr.ready = ok
			}
			pr.mu.Unlock()
			if changed {
				k.queue.Add(pr.key)
			}
		})
	}
	if cr.spec.LivenessProbe != nil {
		go k.runProbe(ctx, pod, pr, cr, cr.spec.LivenessProbe, func(ok bool) {
			if ok {
				return
			}
			pr.mu.Lock()
			cmd := cr.cmd
			running := cr.running
			pr.mu.Unlock()
			if running && cmd != nil && cmd.Process != nil {
				k.log.Info("liveness probe failed; restarting container", "pod", pr.key, "container", cr.name)
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			}
		})
	}
}

// runProbe calls report with the probe's verdict after the success or
// failure threshold is crossed.
func (k *Kubelet) runProbe(ctx context.Context, pod *corev1.Pod, pr *podRuntime, cr *containerRuntime, p *corev1.Probe, report func(bool)) {
	period := time.Duration(max(p.PeriodSeconds, 1)) * time.Second
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	succ, fail := int(max(p.SuccessThreshold, 1)), int(max(p.FailureThreshold, 1))
	select {
	case <-pr.stopped:
		return
	case <-ctx.Done():
		return
	case <-time.After(time.Duration(p.InitialDelaySeconds) * time.Second):
	}
	okRun, failRun := 0, 0
	for {
		pr.mu.Lock()
		running := cr.running
		pr.mu.Unlock()
		if running {
			err := k.probeOnce(ctx, pod, pr, cr, p, timeout)
			if err == nil {
				okRun, failRun = okRun+1, 0
				if okRun >= succ {
					report(true)
				}
			} else {
				okRun, failRun = 0, failRun+1
				if failRun >= fail {
					report(false)
				}
			}
		}
		select {
		case <-pr.stopped:
			return
		case <-ctx.Done():
			return
		case <-time.After(period):
		}
	}
}

func (k *Kubelet) probeOnce(ctx context.Context, pod *corev1.Pod, pr *podRuntime, cr *containerRuntime, p *corev1.Probe, timeout time.Duration) error {
	if len(pr.ips) == 0 {
		return fmt.Errorf("no pod IP")
	}
	host := pr.ips[0].String()
	switch {
	case p.HTTPGet != nil:
		port, err := resolvePort(p.HTTPGet.Port, cr.spec)
		if err != nil {
			return err
		}
		scheme := "http"
		if p.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		if p.HTTPGet.Host != "" {
			host = p.HTTPGet.Host
		}
		url := fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), p.HTTPGet.Path)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		for _, h := range p.HTTPGet.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		req.Header.Set("User-Agent", "kube-probe/1.37")
		client := &http.Client{Timeout: timeout}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	case p.TCPSocket != nil:
		port, err := resolvePort(p.TCPSocket.Port, cr.spec)
		if err != nil {
			return err
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(port)), timeout)
		if err != nil {
			return err
		}
		return c.Close()
	case p.Exec != nil:
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		_, env, err := k.containerCommand(pod, pr, cr.spec)
		if err != nil {
			return err
		}
		cmd := exec.CommandContext(cctx, k.cfg.WeftBinary, append([]string{"lab", "run-container", "--spec", cr.specPath, "--"}, p.Exec.Command...)...)
		cmd.Env = env
		return cmd.Run()
	case p.GRPC != nil:
		return fmt.Errorf("grpc probes are not supported by the lab node")
	}
	return fmt.Errorf("probe has no handler")
}

func resolvePort(p intstr.IntOrString, c corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("no container port named %q", p.StrVal)
}
