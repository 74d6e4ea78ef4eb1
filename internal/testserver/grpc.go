package testserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// FlipService is a health service name whose status the testserver
// toggles every FlipEvery, so a Watch stream carries a message each time.
const (
	FlipService = "flip"
	FlipEvery   = 100 * time.Millisecond
)

// serveGRPC serves the standard gRPC health service over h2c: Check is a
// unary call, Watch a server stream.
func serveGRPC(ctx context.Context, l net.Listener) error {
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() {
		t := time.NewTicker(FlipEvery)
		defer t.Stop()
		serving := true
		for {
			select {
			case <-ctx.Done():
				srv.Stop()
				return
			case <-t.C:
				serving = !serving
				st := healthpb.HealthCheckResponse_NOT_SERVING
				if serving {
					st = healthpb.HealthCheckResponse_SERVING
				}
				hs.SetServingStatus(FlipService, st)
			}
		}
	}()
	return srv.Serve(l)
}

// GRPCResult is what a gRPC check saw.
type GRPCResult struct {
	Unary    string `json:"unary"`
	Streamed int    `json:"streamed"`
}

// CheckGRPC makes one unary Check and reads want messages from a Watch
// stream of the flip service, through addr with authority as :authority
// (the virtual host), over TLS (unverified) or h2c.
func CheckGRPC(ctx context.Context, addr, authority string, useTLS bool, want int) (GRPCResult, error) {
	var res GRPCResult
	creds := insecure.NewCredentials()
	if useTLS {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, ServerName: authority})
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if authority != "" {
		opts = append(opts, grpc.WithAuthority(authority))
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return res, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)
	r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return res, fmt.Errorf("unary Check: %w", err)
	}
	res.Unary = r.GetStatus().String()
	stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: FlipService})
	if err != nil {
		return res, fmt.Errorf("Watch: %w", err)
	}
	for res.Streamed < want {
		if _, err := stream.Recv(); err != nil {
			return res, fmt.Errorf("Watch message %d: %w", res.Streamed+1, err)
		}
		res.Streamed++
	}
	return res, nil
}
