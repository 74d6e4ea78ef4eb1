package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// execRuntime runs `kubectl exec` commands in a container's namespaces and
// carries `kubectl port-forward` streams, for the streaming server (which
// speaks SPDY/WebSocket to the API server).
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

// PortForward connects the stream to the pod's port; the node reaches
// its pods' addresses directly.
func (r execRuntime) PortForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	r.k.mu.Lock()
	pr := r.k.pods[podID]
	r.k.mu.Unlock()
	if pr == nil || len(pr.ips) == 0 {
		return fmt.Errorf("pod %s is not running on %s", podID, r.k.cfg.NodeName)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(pr.ips[0].String(), strconv.Itoa(int(port))))
	if err != nil {
		return err
	}
	defer conn.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(conn, stream); done <- struct{}{} }()
	go func() { _, _ = io.Copy(stream, conn); done <- struct{}{} }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}

// handlePortForward serves /portForward/{namespace}/{pod}.
func (k *Kubelet) handlePortForward(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/portForward/"), "/")
	if len(parts) != 2 {
		http.Error(w, "want /portForward/NAMESPACE/POD", http.StatusBadRequest)
		return
	}
	id := parts[0] + "/" + parts[1]
	k.mu.Lock()
	pr := k.pods[id]
	k.mu.Unlock()
	if pr == nil {
		http.Error(w, "pod "+id+" is not running here", http.StatusNotFound)
		return
	}
	resp, err := k.streaming.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: id})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	k.serveStreaming(w, r, resp.Url)
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
	k.serveStreaming(w, r, resp.Url)
}

// serveStreaming hands the request to the streaming server under the
// token URL it issued.
func (k *Kubelet) serveStreaming(w http.ResponseWriter, r *http.Request, tokenURL string) {
	u, err := url.Parse(tokenURL)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path, r2.URL.RawPath, r2.RequestURI = u.Path, "", u.RequestURI()
	k.streaming.ServeHTTP(w, r2)
}
