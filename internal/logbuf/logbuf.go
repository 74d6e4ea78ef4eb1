// Package logbuf buffers a log stream: records are kept whole and written
// together when the buffer fills or a flush interval passes, as nginx's
// "access_log buffer= flush=" does. A proxy's access log is one record
// per request; written one by one, each costs a write to the container
// runtime's pipe and a read and a write in the runtime.
package logbuf

import (
	"context"
	"io"
	"sync"
	"time"
)

// Writer collects records (each Write is one) for w.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
	max int
}

// New buffers up to max bytes for w.
func New(w io.Writer, max int) *Writer {
	return &Writer{w: w, buf: make([]byte, 0, max), max: max}
}

// Write keeps p, a whole record; a full buffer is written first.
func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf)+len(p) > b.max {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > b.max {
			return b.w.Write(p)
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// Flush writes what is buffered.
func (b *Writer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *Writer) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.w.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}

// Run flushes every interval until ctx ends, then once more.
func (b *Writer) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_ = b.Flush()
		case <-ctx.Done():
			_ = b.Flush()
			return
		}
	}
}
