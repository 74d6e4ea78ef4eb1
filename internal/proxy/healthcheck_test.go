package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
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
	h := NewHealthServer("127.0.0.1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer h.Close()
	port := freePort(t)
	get := func() (int, map[string]any) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	h.Update(map[int32]HealthInfo{port: {Namespace: "ns", Name: "svc", LocalEndpoints: 2}})
	if code, body := get(); code != 200 || body["localEndpoints"].(float64) != 2 {
		t.Fatalf("with local endpoints: %d %v", code, body)
	}
	h.Update(map[int32]HealthInfo{port: {Namespace: "ns", Name: "svc", LocalEndpoints: 0}})
	if code, _ := get(); code != 503 {
		t.Fatalf("without local endpoints: %d, want 503", code)
	}
	h.Update(map[int32]HealthInfo{})
	if code, _ := get(); code != 0 {
		t.Fatalf("port still served after the service went: %d", code)
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
