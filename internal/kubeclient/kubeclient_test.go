package kubeclient

import (
	"context"
	"net"
	"testing"
	"time"
)

// A dial to an address nobody listens on yet waits, and connects as soon
// as a listener appears; a canceled context ends the wait.
func TestDialPatientlyWaitsForTheServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // refused until it listens again
	dial := DialPatiently(20 * time.Millisecond)
	done := make(chan error, 1)
	go func() {
		c, err := dial(context.Background(), "tcp", addr)
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("returned while nothing listened: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("after the server came back: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still waiting after the server came back")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := dial(ctx, "tcp", "127.0.0.1:1"); err == nil {
		t.Fatal("a dial to a closed port succeeded")
	}
}
