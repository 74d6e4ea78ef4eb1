package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"testing"
)

func freePort(t *testing.T) int32 {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func TestHealthServer(t *testing.T) {
	h := NewHealthServer(slog.New(slog.NewTextHandler(io.Discard, nil)))
	h.SetAddresses([]string{"127.0.0.1"})
	defer h.Close()
	port := freePort(t)
	weight := ""
	get := func() (int, map[string]any) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		weight = resp.Header.Get("X-Load-Balancing-Endpoint-Weight")
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	h.Update(map[int32]HealthInfo{port: {Namespace: "ns", Name: "svc", LocalEndpoints: 2}})
	if code, body := get(); code != 200 || body["localEndpoints"].(float64) != 2 || body["serviceProxyHealthy"] != true || weight != "2" {
		t.Fatalf("with local endpoints: %d %v weight %q", code, body, weight)
	}
	// The proxy itself unhealthy: 503 whatever the endpoints (kube-proxy).
	proxyHealthy := false
	h.Healthy = func() bool { return proxyHealthy }
	if code, body := get(); code != 503 || body["serviceProxyHealthy"] != false || weight != "2" {
		t.Fatalf("proxy unhealthy: %d %v weight %q, want 503", code, body, weight)
	}
	proxyHealthy = true
	if code, _ := get(); code != 200 {
		t.Fatalf("proxy healthy again: %d", code)
	}
	h.Update(map[int32]HealthInfo{port: {Namespace: "ns", Name: "svc", LocalEndpoints: 0}})
	if code, _ := get(); code != 503 || weight != "0" {
		t.Fatalf("without local endpoints: %d weight %q, want 503", code, weight)
	}
	h.Update(map[int32]HealthInfo{})
	if code, _ := get(); code != 0 {
		t.Fatalf("port still served after the service went: %d", code)
	}
}

// The ports move with the addresses (--nodeport-addresses, the node's
// InternalIPs): served on the new one, no longer on the old.
func TestHealthServerSetAddresses(t *testing.T) {
	h := NewHealthServer(slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer h.Close()
	h.SetAddresses([]string{"127.0.0.1"})
	port := freePort(t)
	h.Update(map[int32]HealthInfo{port: {Namespace: "ns", Name: "svc", LocalEndpoints: 1}})
	served := func(ip string) bool {
		resp, err := http.Get(fmt.Sprintf("http://%s:%d/", ip, port))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	if !served("127.0.0.1") || served("127.0.0.2") {
		t.Fatalf("bound to 127.0.0.1: served there %v, on 127.0.0.2 %v", served("127.0.0.1"), served("127.0.0.2"))
	}
	h.SetAddresses([]string{"127.0.0.2", "127.0.0.3"})
	if served("127.0.0.1") || !served("127.0.0.2") || !served("127.0.0.3") {
		t.Fatalf("moved to 127.0.0.2 and .3: served on .1 %v, .2 %v, .3 %v", served("127.0.0.1"), served("127.0.0.2"), served("127.0.0.3"))
	}
	h.SetAddresses([]string{})
	if served("127.0.0.2") {
		t.Fatal("no addresses: still served")
	}
}

func TestHealthAddresses(t *testing.T) {
	cidrs := func(s ...string) []*net.IPNet {
		n, err := ParseNodePortAddresses(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	nodeIPs := []net.IP{net.ParseIP("198.18.1.11"), net.ParseIP("fd00::11")}
	local := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("198.18.1.11"), net.ParseIP("10.244.1.0"), net.ParseIP("fd00::11")}
	for _, c := range []struct {
		name  string
		npa   []*net.IPNet
		nodes []net.IP
		want  []string
	}{
		{"primary", nil, nodeIPs, []string{"198.18.1.11", "fd00::11"}},
		{"primary, node addresses unknown", nil, []net.IP{nil, nil}, []string{""}},
		{"cidr", cidrs("10.244.0.0/16", "127.0.0.0/8"), nodeIPs, []string{"10.244.1.0"}},
		{"all", cidrs("0.0.0.0/0"), nodeIPs, []string{""}},
		{"no local address inside", cidrs("192.0.2.0/24"), nodeIPs, []string{}},
	} {
		if got := HealthAddresses(c.npa, c.nodes, local); !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestHealthPorts(t *testing.T) {
	sp := ServicePort{Namespace: "ns", Name: "svc", ExternalLocal: true, HealthCheckNodePort: 32000,
		AllEndpoints: []Endpoint{{IP: net.ParseIP("10.0.0.1"), Port: 80, Ready: true, NodeName: "n1"}, {IP: net.ParseIP("10.0.0.2"), Port: 80, Ready: true, NodeName: "n2"}}}
	got := HealthPorts([]ServicePort{sp}, "n1")
	if got[32000].LocalEndpoints != 1 {
		t.Fatalf("%v", got)
	}
	// Only a terminating (still serving) endpoint here: 0, so the check
	// fails, though traffic still falls back to it.
	// (The EndpointSlice controller clears Ready for terminating pods.)
	sp.AllEndpoints[0].Ready, sp.AllEndpoints[0].Serving, sp.AllEndpoints[0].Terminating = false, true, true
	if got := HealthPorts([]ServicePort{sp}, "n1"); got[32000].LocalEndpoints != 0 {
		t.Fatalf("terminating endpoint counted: %v", got)
	}
	if len(sp.LocalEndpoints("n1")) != 1 {
		t.Fatalf("the datapath must still use the terminating endpoint")
	}
}
