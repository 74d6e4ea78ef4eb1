package proxy

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
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
	log *slog.Logger
	// Healthy reports whether the proxy itself is in step with the API; a
	// node whose proxy is not answers 503 whatever its endpoints, as
	// kube-proxy's does. nil counts as healthy.
	Healthy func() bool

	mu sync.Mutex
	// bindIPs: one listener per address and port; "" is every address.
	bindIPs []string
	info    map[int32]HealthInfo
	servers map[int32][]*http.Server
}

// NewHealthServer listens on every address until SetAddresses says where.
func NewHealthServer(log *slog.Logger) *HealthServer {
	return &HealthServer{bindIPs: []string{""}, log: log, info: map[int32]HealthInfo{}, servers: map[int32][]*http.Server{}}
}

// SetAddresses moves every port to these addresses ("" is every address;
// none: no listeners), as kube-proxy's follow --nodeport-addresses.
func (h *HealthServer) SetAddresses(ips []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if slices.Equal(ips, h.bindIPs) {
		return
	}
	h.bindIPs = ips
	for port, srvs := range h.servers {
		closeAll(srvs)
		delete(h.servers, port)
	}
	h.openMissing()
}

// Update sets the ports to serve and what each reports.
func (h *HealthServer) Update(want map[int32]HealthInfo) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.info = want
	for port, srvs := range h.servers {
		if _, ok := want[port]; !ok {
			closeAll(srvs)
			delete(h.servers, port)
		}
	}
	h.openMissing()
}

// openMissing listens for every wanted port not served yet. A port none of
// whose listeners opened is tried again at the next Update (every sync).
func (h *HealthServer) openMissing() {
	for port := range h.info {
		if _, ok := h.servers[port]; ok {
			continue
		}
		var srvs []*http.Server
		for _, ip := range h.bindIPs {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(int(port))))
			if err != nil {
				h.log.Error("health check node port", "address", ip, "port", port, "err", err)
				continue
			}
			p := port
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.serve(p, w) }),
				ReadHeaderTimeout: 5 * time.Second}
			srvs = append(srvs, srv)
			go func() {
				if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					h.log.Error("health check node port stopped", "address", ip, "port", p, "err", err)
				}
			}()
		}
		if len(srvs) > 0 {
			h.servers[port] = srvs
		}
	}
}

func closeAll(srvs []*http.Server) {
	for _, srv := range srvs {
		srv.Close()
	}
}

// HealthAddresses is where health check node ports listen, following
// --nodeport-addresses as kube-proxy does: the node's InternalIPs
// (primary; every address while they are unknown), its local addresses
// inside the CIDRs, or every address ("") when a CIDR is 0.0.0.0/0 or ::/0.
func HealthAddresses(nodePortAddresses []*net.IPNet, nodeIPs, local []net.IP) []string {
	out := []string{}
	if len(nodePortAddresses) == 0 {
		for _, ip := range nodeIPs {
			if ip != nil {
				out = append(out, ip.String())
			}
		}
		if len(out) == 0 {
			return []string{""}
		}
		return out
	}
	for _, n := range nodePortAddresses {
		if ones, _ := n.Mask.Size(); ones == 0 {
			return []string{""}
		}
	}
	for _, ip := range local {
		if ip.IsLoopback() {
			continue
		}
		for _, n := range nodePortAddresses {
			if n.Contains(ip) {
				out = append(out, ip.String())
				break
			}
		}
	}
	return out
}

func (h *HealthServer) serve(port int32, w http.ResponseWriter) {
	h.mu.Lock()
	info, ok := h.info[port]
	h.mu.Unlock()
	if !ok {
		http.Error(w, "no service on this port", http.StatusNotFound)
		return
	}
	healthy := h.Healthy == nil || h.Healthy()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Load balancers that weigh nodes read the local endpoint count here.
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(info.LocalEndpoints))
	if info.LocalEndpoints == 0 || !healthy {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"service":             map[string]string{"namespace": info.Namespace, "name": info.Name},
		"localEndpoints":      info.LocalEndpoints,
		"serviceProxyHealthy": healthy,
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
