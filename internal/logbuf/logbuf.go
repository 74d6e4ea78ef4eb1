// Package logbuf buffers a log stream: records are kept whole and written
// together when the buffer fills or a flush interval passes, as nginx's
// "access_log buffer= flush=" does. A proxy's access log is one record
// per request; written one by one, each costs a write to the container
// runtime's pipe and a read and a write in the runtime.
//
// A full buffer is written by Run's goroutine, not by the request that
// filled it: a pipe whose reader lags blocks its writer, and a request
// must not wait for the log (nor every other request for its lock). Only
// when maxPending full buffers are already waiting does Write write them
// itself, so a reader that stops holds memory to that bound.
package logbuf

import (
	"context"
	"io"
	"sync"
	"time"
)

// maxPending full buffers may wait for Run's goroutine.
const maxPending = 4

// Writer collects records (each Write is one) for w.
type Writer struct {
	mu      sync.Mutex
	w       io.Writer
	buf     []byte
	max     int
	pending [][]byte // full buffers, oldest first
	free    [][]byte
	wake    chan struct{}
	// writing serialises writes to w, so records keep their order.
	writing sync.Mutex
}

// New buffers up to max bytes for w (0: each record written at once).
func New(w io.Writer, max int) *Writer {
	return &Writer{w: w, buf: make([]byte, 0, max), max: max, wake: make(chan struct{}, 1)}
}

// Write keeps p, a whole record; a full buffer is handed to Run's
// goroutine first.
func (b *Writer) Write(p []byte) (int, error) {
	if b.max == 0 {
		b.writing.Lock()
		defer b.writing.Unlock()
		return b.w.Write(p)
	}
	b.mu.Lock()
	if len(b.buf)+len(p) > b.max {
		b.handOffLocked()
		if len(p) > b.max {
			b.pending = append(b.pending, append([]byte(nil), p...))
		}
		backlog := len(b.pending) > maxPending
		b.mu.Unlock()
		select {
		case b.wake <- struct{}{}:
		default:
		}
		if backlog {
			if err := b.drain(); err != nil {
				return 0, err
			}
		}
		if len(p) > b.max {
			return len(p), nil
		}
		b.mu.Lock()
	}
	b.buf = append(b.buf, p...)
	b.mu.Unlock()
	return len(p), nil
}

// handOffLocked queues the current buffer and starts an empty one.
func (b *Writer) handOffLocked() {
	if len(b.buf) == 0 {
		return
	}
	b.pending = append(b.pending, b.buf)
	if n := len(b.free); n > 0 {
		b.buf = b.free[n-1]
		b.free = b.free[:n-1]
	} else {
		b.buf = make([]byte, 0, b.max)
	}
}

// drain writes the queued buffers, in order.
func (b *Writer) drain() error {
	b.writing.Lock()
	defer b.writing.Unlock()
	b.mu.Lock()
	batch := b.pending
	b.pending = nil
	b.mu.Unlock()
	var err error
	for _, buf := range batch {
		if _, werr := b.w.Write(buf); werr != nil && err == nil {
			err = werr
		}
	}
	b.mu.Lock()
	for _, buf := range batch {
		if len(b.free) < maxPending && cap(buf) == b.max {
			b.free = append(b.free, buf[:0])
		}
	}
	b.mu.Unlock()
	return err
}

// Flush writes what is buffered and waits until it is written.
func (b *Writer) Flush() error {
	b.mu.Lock()
	b.handOffLocked()
	b.mu.Unlock()
	return b.drain()
}

// Run writes full buffers as they come and flushes every interval until
// ctx ends, then once more.
func (b *Writer) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.wake:
			_ = b.drain()
		case <-t.C:
			_ = b.Flush()
		case <-ctx.Done():
			_ = b.Flush()
			return
		}
	}
}
