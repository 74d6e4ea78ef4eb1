package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestKubeProxyCompatEndpoints(t *testing.T) {
	p := &Proxy{cfg: Config{NodeName: "n1"}}
	hz, st := p.CompatHandlers()
	get := func(h http.Handler, path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec
	}
	if rec := get(hz, "/healthz"); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("before the first sync: %d", rec.Code)
	}
	p.lastUpdated = time.Now()
	rec := get(hz, "/healthz")
	var body healthzBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != 200 || !body.NodeHealthy || body.NodeName != "n1" || body.LastUpdated == "" {
		t.Fatalf("after a sync: %d %s %v", rec.Code, rec.Body, err)
	}
	p.firstDirt = time.Now().Add(-2 * unhealthyAfter)
	if rec := get(hz, "/livez"); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("with a change unsynced for 2 min: %d", rec.Code)
	}
	if rec := get(st, "/proxyMode"); rec.Code != 200 || rec.Body.String() != "nftables" {
		t.Fatalf("/proxyMode: %d %q", rec.Code, rec.Body)
	}
}
