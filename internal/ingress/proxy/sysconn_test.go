package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// A write far larger than the socket buffers, to a slow reader, waits
// and resumes until all is sent, in order; the reader sees EOF at close.
func TestSysConnLongWriteAndEOF(t *testing.T) {
	a, b := tcpPair(t)
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	got := make(chan []byte)
	go func() {
		var buf bytes.Buffer
		r := newSysConn(b)
		chunk := make([]byte, 4096)
		for {
			n, err := r.Read(chunk)
			buf.Write(chunk[:n])
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Errorf("read: %v, want EOF", err)
				}
				got <- buf.Bytes()
				return
			}
			if buf.Len()%(1<<20) < 4096 {
				time.Sleep(20 * time.Millisecond) // let the writer's buffers fill
			}
		}
	}()
	n, err := newSysConn(a).Write(data)
	if err != nil || n != len(data) {
		t.Fatalf("write: %d of %d, %v", n, len(data), err)
	}
	a.Close()
	if g := <-got; !bytes.Equal(g, data) {
		t.Fatalf("received %d bytes, equal %v", len(g), bytes.Equal(g, data))
	}
}

// Deadlines hold as on net.Conn; a write to a reset peer fails.
func TestSysConnDeadlineAndReset(t *testing.T) {
	a, b := tcpPair(t)
	_ = a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := newSysConn(a).Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past its deadline: %v, want a timeout", err)
	}
	b.(*net.TCPConn).SetLinger(0)
	b.Close() // RST
	time.Sleep(50 * time.Millisecond)
	w := newSysConn(a)
	for i := 0; ; i++ {
		if _, err = w.Write([]byte("x")); err != nil {
			break
		}
		if i == 100 {
			t.Fatal("writes to a reset peer keep succeeding")
		}
	}
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("write to a reset peer: %v, want ECONNRESET or EPIPE", err)
	}
}
