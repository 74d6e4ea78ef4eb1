package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// execRuntime runs `kubectl exec` commands in a container's namespaces
// for the streaming server (which speaks SPDY/WebSocket to the API server).
type execRuntime struct{ k *Kubelet }

// Exec runs cmd through `weft lab run-container` with the container's spec.
// TTY is not emulated: the command runs with plain pipes.
func (r execRuntime) Exec(ctx context.Context, containerID string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	cr, _, err := r.k.lookupContainer(containerID)
	if err != nil {
		return err
	}
	c := exec.CommandContext(ctx, r.k.cfg.WeftBinary, append([]string{"lab", "run-container", "--spec", cr.specPath, "--"}, cmd...)...)
	c.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	c.Stdin, c.Stdout = in, out
	c.Stderr = errw
	if errw == nil {
		c.Stderr = out
	}
	err = c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		// The streaming server reports this code to the client.
		return utilexec.CodeExitError{Err: err, Code: ee.ExitCode()}
	}
	return err
}

func (r execRuntime) Attach(context.Context, string, io.Reader, io.WriteCloser, io.WriteCloser, bool, <-chan remotecommandserver.TerminalSize) error {
	return fmt.Errorf("attach is not supported by the lab node")
}

func (r execRuntime) PortForward(context.Context, string, int32, io.ReadWriteCloser) error {
	return fmt.Errorf("port-forward is not supported by the lab node yet")
}

// lookupContainer resolves "namespace/pod/container".
func (k *Kubelet) lookupContainer(id string) (*containerRuntime, *podRuntime, error) {
	parts := strings.SplitN(id, "/", 3)
	if len(parts) != 3 {
		return nil, nil, fmt.Errorf("bad container id %q", id)
	}
	k.mu.Lock()
	pr := k.pods[parts[0]+"/"+parts[1]]
	k.mu.Unlock()
	if pr == nil {
		return nil, nil, fmt.Errorf("pod %s/%s is not running on %s", parts[0], parts[1], k.cfg.NodeName)
	}
	pr.mu.Lock()
	cr := pr.containers[parts[2]]
	pr.mu.Unlock()
	if cr == nil {
		return nil, nil, fmt.Errorf("container %q not found in pod %s/%s", parts[2], parts[0], parts[1])
	}
	return cr, pr, nil
}

func newStreamingServer(k *Kubelet) (streaming.Server, error) {
	cfg := streaming.DefaultConfig
	cfg.Addr = "127.0.0.1:0" // never started: requests are served in-process
	cfg.BaseURL = &url.URL{Scheme: "http", Host: "weft-lab-node"}
	return streaming.NewServer(cfg, execRuntime{k: k})
}

// handleExec serves /exec/{namespace}/{pod}/{container}?command=...: the
// API server's side of `kubectl exec`. The request is registered with the
// streaming server and then handed to it under its token URL.
func (k *Kubelet) handleExec(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/exec/"), "/")
	if len(parts) != 3 {
		http.Error(w, "want /exec/NAMESPACE/POD/CONTAINER", http.StatusBadRequest)
		return
	}
	id := strings.Join(parts, "/")
	if _, _, err := k.lookupContainer(id); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	req := &runtimeapi.ExecRequest{ContainerId: id, Cmd: q["command"],
		Tty: q.Get("tty") == "true" || q.Get("tty") == "1", Stdin: q.Get("input") == "1" || q.Get("stdin") == "true",
		Stdout: q.Get("output") == "1" || q.Get("stdout") == "true", Stderr: q.Get("error") == "1" || q.Get("stderr") == "true"}
	if len(req.Cmd) == 0 {
		http.Error(w, "no command", http.StatusBadRequest)
		return
	}
	resp, err := k.streaming.GetExec(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	u, err := url.Parse(resp.Url)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path, r2.URL.RawPath, r2.RequestURI = u.Path, "", u.RequestURI()
	k.streaming.ServeHTTP(w, r2)
}
