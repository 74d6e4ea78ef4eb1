package testserver

import (
	"context"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestWebSocketEchoAndLoad(t *testing.T) {
	srv := httptest.NewServer(New(Config{Name: "pod-a"}, slog.New(slog.DiscardHandler)).Handler())
	defer srv.Close()
	ws := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	r, err := HoldWebSocket(context.Background(), ws, "", 300*time.Millisecond, 20*time.Millisecond)
	if err != nil || r.Sent == 0 || r.Answered != r.Sent {
		t.Fatalf("websocket: %+v %v", r, err)
	}
	// A path that is no WebSocket fails the dial.
	if _, err := HoldWebSocket(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http")+"/hostname", "", time.Second, time.Millisecond); err == nil {
		t.Error("a WebSocket to /hostname succeeded")
	}
	lr := Load(context.Background(), srv.URL+"/hostname", "", 2, 200*time.Millisecond)
	if lr.Requests == 0 || lr.Failed != 0 {
		t.Errorf("load on /hostname: %+v", lr)
	}
	lr = Load(context.Background(), srv.URL+"/nope", "", 1, 100*time.Millisecond)
	if lr.Requests == 0 || lr.Failed != lr.Requests {
		t.Errorf("load on a 404 path counted no failures: %+v", lr)
	}
}

func TestUntilOK(t *testing.T) {
	srv := httptest.NewServer(New(Config{Name: "pod-a"}, slog.New(slog.DiscardHandler)).Handler())
	defer srv.Close()
	if r, err := UntilOK(srv.URL+"/hostname", "", time.Second, time.Millisecond); err != nil || r.At == 0 || r.Tries != 1 || r.First != r.At {
		t.Errorf("until-ok on /hostname: %+v %v", r, err)
	}
	if r, err := UntilOK(srv.URL+"/nope", "", 50*time.Millisecond, time.Millisecond); err == nil || r.At != 0 {
		t.Errorf("until-ok on a 404 path: %+v %v, want an error", r, err)
	}
}

func TestGRPCHealthUnaryAndStream(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = serveGRPC(ctx, l) }()
	r, err := CheckGRPC(ctx, l.Addr().String(), "svc.example", false, 3)
	if err != nil || r.Unary != "SERVING" || r.Streamed != 3 {
		t.Fatalf("grpc: %+v %v", r, err)
	}
	// TLS against an h2c server fails.
	if _, err := CheckGRPC(ctx, l.Addr().String(), "svc.example", true, 1); err == nil {
		t.Error("TLS to an h2c server succeeded")
	}
}
