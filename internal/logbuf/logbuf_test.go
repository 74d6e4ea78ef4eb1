package logbuf

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// writes records every Write call to its buffer.
type writes struct{ calls []string }

func (w *writes) Write(p []byte) (int, error) {
	w.calls = append(w.calls, string(p))
	return len(p), nil
}

func TestRecordsStayWholeAndAreWrittenTogether(t *testing.T) {
	w := &writes{}
	b := New(w, 10)
	for _, r := range []string{"aaaa\n", "bbbb\n", "cccc\n", "a record longer than the buffer\n"} {
		if _, err := b.Write([]byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	want := []string{"aaaa\nbbbb\n", "cccc\n", "a record longer than the buffer\n"}
	if len(w.calls) != len(want) {
		t.Fatalf("writes %q, want %q", w.calls, want)
	}
	for i := range want {
		if w.calls[i] != want[i] {
			t.Errorf("write %d: %q, want %q", i, w.calls[i], want[i])
		}
	}
}

func TestRunFlushesOnItsIntervalAndAtTheEnd(t *testing.T) {
	var out bytes.Buffer
	b := New(&out, 1<<10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx, time.Millisecond); close(done) }()
	b.Write([]byte("one\n"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		n := out.Len()
		b.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not flushed by its interval")
		}
		time.Sleep(time.Millisecond)
	}
	b.Write([]byte("two\n"))
	cancel()
	<-done
	if out.String() != "one\ntwo\n" {
		t.Errorf("got %q", out.String())
	}
}
