package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// kube-proxy's own endpoints, served so that what checks kube-proxy keeps
// working when weft replaces it: cloud load balancers probe
// :10256/healthz on every node, and tools on the node read
// 127.0.0.1:10249/proxyMode (loopback only, as kube-proxy's metrics port).
const (
	KubeProxyHealthzAddr = ":10256"
	KubeProxyStatusAddr  = "127.0.0.1:10249"
	// unhealthyAfter: a change left unsynced this long makes /healthz fail.
	unhealthyAfter = time.Minute
)

type healthzBody struct {
	LastUpdated string `json:"lastUpdated"`
	CurrentTime string `json:"currentTime"`
	NodeName    string `json:"nodeName"`
	NodeHealthy bool   `json:"nodeHealthy"`
}

// healthy reports whether the datapath is in step with the API: a sync has
// succeeded and no change has waited longer than unhealthyAfter.
func (p *Proxy) healthy(now time.Time) (bool, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ok := !p.lastUpdated.IsZero() && (p.firstDirt.IsZero() || now.Sub(p.firstDirt) < unhealthyAfter)
	return ok, p.lastUpdated
}

// CompatHandlers returns the /healthz + /livez and /proxyMode handlers.
func (p *Proxy) CompatHandlers() (healthz, status http.Handler) {
	hz := http.NewServeMux()
	health := func(w http.ResponseWriter, _ *http.Request) {
		now := time.Now()
		ok, last := p.healthy(now)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(healthzBody{LastUpdated: last.UTC().Format(time.RFC3339Nano), CurrentTime: now.UTC().Format(time.RFC3339Nano),
			NodeName: p.cfg.NodeName, NodeHealthy: ok})
	}
	hz.HandleFunc("/healthz", health)
	hz.HandleFunc("/livez", health)
	st := http.NewServeMux()
	st.HandleFunc("/proxyMode", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "nftables") // the datapath kind, as kube-proxy reports its mode
	})
	return hz, st
}

// ServeCompat serves the kube-proxy endpoints until ctx ends.
func (p *Proxy) ServeCompat(ctx context.Context, healthzAddr, statusAddr string) error {
	hz, st := p.CompatHandlers()
	errc := make(chan error, 2)
	for _, s := range []*http.Server{{Addr: healthzAddr, Handler: hz, ReadHeaderTimeout: 5 * time.Second},
		{Addr: statusAddr, Handler: st, ReadHeaderTimeout: 5 * time.Second}} {
		go func() {
			if err := s.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
		defer s.Close()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}
