package netpol

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"weft.dev/weft/internal/cni"
)

// Serve answers weft-cni on a unix socket at path (only root may connect)
// until ctx ends.
func (c *Controller) Serve(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+cni.PolicyReadyPath, c.serveReady)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
		_ = os.Remove(path)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (c *Controller) serveReady(w http.ResponseWriter, r *http.Request) {
	var req cni.PolicyReadyRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	var ips []netip.Addr
	for _, s := range req.IPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			http.Error(w, "bad address: "+err.Error(), http.StatusBadRequest)
			return
		}
		ips = append(ips, a.Unmap())
	}
	if req.Namespace == "" || req.Name == "" || len(ips) == 0 {
		http.Error(w, "namespace, name and ips are required", http.StatusBadRequest)
		return
	}
	if c.CheckAddresses != nil {
		if err := c.CheckAddresses(ips); err != nil {
			c.log.Warn("pod start refused", "pod", req.Namespace+"/"+req.Name, "err", err)
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
	}
	start := time.Now()
	if err := c.PodReady(r.Context(), req.Namespace, req.Name, ips); err != nil {
		c.log.Warn("pod start held: policy not in place", "pod", req.Namespace+"/"+req.Name, "err", err)
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	c.readyWait.Observe(time.Since(start).Seconds())
	w.WriteHeader(http.StatusNoContent)
}
