package logbuf

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
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
		b.writing.Lock()
		n := out.Len()
		b.writing.Unlock()
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

// gate is a reader that stops: its Writes block until open is closed.
type gate struct {
	entered chan struct{}
	open    chan struct{}
	once    sync.Once
	mu      sync.Mutex
	calls   []string
}

func (g *gate) Write(p []byte) (int, error) {
	g.once.Do(func() { close(g.entered) })
	<-g.open
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, string(p))
	return len(p), nil
}

// A request whose record fills the buffer must not wait while the log's
// reader lags; records still arrive whole and in order, also past the
// bound where Write waits after all.
func TestWriteDoesNotWaitForALaggingReader(t *testing.T) {
	g := &gate{entered: make(chan struct{}), open: make(chan struct{})}
	b := New(g, 10)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { b.Run(ctx, time.Hour); close(ran) }()
	var want []string
	record := func(i int) string { return fmt.Sprintf("r%03d\n", i) }
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for i := 0; i < 8; i++ { // four buffers: three handed over
			b.Write([]byte(record(i)))
		}
	}()
	for i := 0; i < 8; i++ {
		want = append(want, record(i))
	}
	select {
	case <-wrote:
	case <-time.After(10 * time.Second):
		close(g.open)
		t.Fatal("Write waited for the log's reader")
	}
	<-g.entered
	more := make(chan struct{})
	go func() {
		defer close(more)
		for i := 8; i < 40; i++ {
			b.Write([]byte(record(i)))
		}
	}()
	for i := 8; i < 40; i++ {
		want = append(want, record(i))
	}
	close(g.open)
	<-more
	cancel()
	<-ran
	if got := strings.Join(g.calls, ""); got != strings.Join(want, "") {
		t.Fatalf("records out of order or lost:\n got %q\nwant %q", got, strings.Join(want, ""))
	}
	for _, c := range g.calls {
		if len(c)%len(record(0)) != 0 || !strings.HasSuffix(c, "\n") {
			t.Errorf("a write split a record: %q", c)
		}
	}
}

func TestZeroBufferWritesEachRecordAtOnce(t *testing.T) {
	w := &writes{}
	b := New(w, 0)
	b.Write([]byte("one\n"))
	b.Write([]byte("two\n"))
	if len(w.calls) != 2 || w.calls[0] != "one\n" || w.calls[1] != "two\n" {
		t.Fatalf("writes %q", w.calls)
	}
}
