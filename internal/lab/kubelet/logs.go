package kubelet

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Container logs are kept in the CRI log format, one line per record:
// "TIMESTAMP STREAM F MESSAGE", so `kubectl logs --timestamps` works.
type logWriter struct {
	mu sync.Mutex
	f  *os.File
}

func newLogWriter(path string) (*logWriter, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &logWriter{f: f}, nil
}

func (l *logWriter) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

type streamWriter struct {
	l      *logWriter
	stream string
	buf    []byte
}

func (l *logWriter) stream(name string) io.Writer { return &streamWriter{l: l, stream: name} }

func (s *streamWriter) Write(p []byte) (int, error) {
	s.buf = append(s.buf, p...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		line := s.buf[:i]
		s.l.mu.Lock()
		_, err := fmt.Fprintf(s.l.f, "%s %s F %s\n", time.Now().UTC().Format(time.RFC3339Nano), s.stream, line)
		s.l.mu.Unlock()
		if err != nil {
			return 0, err
		}
		s.buf = s.buf[i+1:]
	}
	return len(p), nil
}

// logLine is one parsed record.
type logLine struct {
	ts  string
	msg string
}

func parseLogLine(b []byte) (logLine, bool) {
	parts := bytes.SplitN(b, []byte(" "), 4)
	if len(parts) < 4 {
		return logLine{}, false
	}
	return logLine{ts: string(parts[0]), msg: string(parts[3])}, true
}

func readLogLines(path string) ([]logLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if l, ok := parseLogLine(sc.Bytes()); ok {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}
