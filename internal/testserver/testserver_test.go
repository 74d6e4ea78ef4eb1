package testserver

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	s := New(Config{Name: "pod-a"}, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	cases := []struct {
		path, want string
		code       int
	}{
		{"/hostname", "pod-a", 200},
		{"/clientip", "127.0.0.1", 200},
		{"/echo?msg=hi", "hi", 200},
		{"/header/User-Agent", "Go-http-client/1.1", 200},
		{"/healthz", "ok", 200},
		{"/delay/1", "pod-a", 200},
		{"/delay/600000", "want 0 to 60000 milliseconds", 400},
		{"/nope", "404 page not found", 404},
	}
	for _, c := range cases {
		resp, err := http.Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code || strings.TrimSpace(string(b)) != c.want {
			t.Errorf("%s: got %d %q, want %d %q", c.path, resp.StatusCode, b, c.code, c.want)
		}
	}
	req, _ := http.NewRequest("GET", srv.URL+"/header/Host", nil)
	req.Host = "asked.example.com"
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if b, _ := io.ReadAll(resp.Body); string(b) != "asked.example.com" {
		t.Errorf("/header/Host: %q, want the request's Host", b)
	}
	resp, err := http.Post(srv.URL+"/echo", "text/plain", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "body" {
		t.Errorf("POST /echo = %q", b)
	}
}

func TestTCPRR(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go serveTCPEcho(ln)
	defer ln.Close()
	r, err := TCPRR(ln.Addr().String(), 200, 32)
	if err != nil {
		t.Fatal(err)
	}
	if r.Count != 200 || r.P50 <= 0 || r.P99 < r.P50 {
		t.Fatalf("%+v", r)
	}
}
