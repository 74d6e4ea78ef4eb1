package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// PolicyReadyRequest is what the plugin sends the agent before it brings a
// pod's interface up: the pod and the addresses it was given.
type PolicyReadyRequest struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	IPs       []string `json:"ips"`
}

// PolicyReadyPath is the request's URL path on the agent's socket.
const PolicyReadyPath = "/v1/pod-ready"

// PolicyWait bounds how long ADD waits for the agent's policy table.
const PolicyWait = 10 * time.Second

// podArgs are the CNI_ARGS a Kubernetes runtime passes.
type podArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE types.UnmarshallableString //nolint:revive,stylecheck // the names the runtime uses
	K8S_POD_NAME      types.UnmarshallableString //nolint:revive,stylecheck
}

// waitForPolicy asks the agent to put the pod's addresses into its
// NetworkPolicy table and returns once it has, so the pod's first packet
// already meets its policies. Without a socket configured, or without a
// pod named in CNI_ARGS, there is nothing to wait for.
func waitForPolicy(socket, cniArgs string, ips []net.IP) error {
	if socket == "" {
		return nil
	}
	var args podArgs
	if err := types.LoadArgs(cniArgs, &args); err != nil {
		return fmt.Errorf("CNI_ARGS: %w", err)
	}
	if args.K8S_POD_NAMESPACE == "" || args.K8S_POD_NAME == "" {
		return nil
	}
	req := PolicyReadyRequest{Namespace: string(args.K8S_POD_NAMESPACE), Name: string(args.K8S_POD_NAME)}
	for _, ip := range ips {
		req.IPs = append(req.IPs, ip.String())
	}
	body, _ := json.Marshal(req)
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	ctx, cancel := context.WithTimeout(context.Background(), PolicyWait)
	defer cancel()
	hreq, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent"+PolicyReadyPath, bytes.NewReader(body))
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hreq)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("agent: %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
