package proxy

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// HealthInfo is what one health check node port reports.
type HealthInfo struct {
	Namespace, Name string
	LocalEndpoints  int
}

// HealthServer serves the healthCheckNodePort of every service with
// externalTrafficPolicy Local: 200 while this node has a local endpoint,
// 503 otherwise, so external load balancers send traffic only to nodes
// that can serve it without an extra hop.
type HealthServer struct {
	bindIP string
	log    *slog.Logger

	mu      sync.Mutex
	info    map[int32]HealthInfo
	servers map[int32]*http.Server
}

// NewHealthServer listens on bindIP ("" for all addresses).
func NewHealthServer(bindIP string, log *slog.Logger) *HealthServer {
	return &HealthServer{bindIP: bindIP, log: log, info: map[int32]HealthInfo{}, servers: map[int32]*http.Server{}}
}

// Update sets the ports to serve and what each reports.
func (h *HealthServer) Update(want map[int32]HealthInfo) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.info = want
	for port, srv := range h.servers {
		if _, ok := want[port]; !ok {
			srv.Close()
			delete(h.servers, port)
		}
	}
	for port := range want {
		if _, ok := h.servers[port]; ok {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(h.bindIP, strconv.Itoa(int(port))))
		if err != nil {
			h.log.Error("health check node port", "port", port, "err", err)
			continue
		}
		p := port
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.serve(p, w) }),
			ReadHeaderTimeout: 5 * time.Second}
		h.servers[port] = srv
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				h.log.Error("health check node port stopped", "port", p, "err", err)
			}
		}()
	}
}

func (h *HealthServer) serve(port int32, w http.ResponseWriter) {
	h.mu.Lock()
	info, ok := h.info[port]
	h.mu.Unlock()
	if !ok {
		http.Error(w, "no service on this port", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if info.LocalEndpoints == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"service":             map[string]string{"namespace": info.Namespace, "name": info.Name},
		"localEndpoints":      info.LocalEndpoints,
		"serviceProxyHealthy": true,
	})
}

// Close stops every listener.
func (h *HealthServer) Close() {
	h.Update(map[int32]HealthInfo{})
}

// HealthPorts derives the health check ports from compiled service ports.
func HealthPorts(ports []ServicePort, node string) map[int32]HealthInfo {
	out := map[int32]HealthInfo{}
	for _, sp := range ports {
		if !sp.ExternalLocal || sp.HealthCheckNodePort == 0 {
			continue
		}
		info := out[sp.HealthCheckNodePort]
		info.Namespace, info.Name = sp.Namespace, sp.Name
		// Only ready endpoints count (terminating pods are not ready
		// unless publishNotReadyAddresses): a node whose local endpoints
		// are all terminating answers 503 so load balancers drain it, while
		// the datapath still falls back to them for connections that
		// arrive (as kube-proxy does).
		for _, e := range sp.AllEndpoints {
			if e.NodeName == node && e.Ready {
				info.LocalEndpoints++
			}
		}
		out[sp.HealthCheckNodePort] = info
	}
	return out
}
