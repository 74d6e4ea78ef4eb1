package kubelet

import (
	"bufio"
	"bytes"
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
	buf    []byte // an incomplete last line
	out    []byte
}

func (l *logWriter) stream(name string) io.Writer { return &streamWriter{l: l, stream: name} }

// Write records every complete line of p, all stamped with the time they
// arrived, in one write to the file: a process that logs a line per
// request (an ingress proxy's access records) must not cost a write and
// a formatted timestamp per line here.
func (s *streamWriter) Write(p []byte) (int, error) {
	s.buf = append(s.buf, p...)
	var stamp []byte
	s.out = s.out[:0]
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		if stamp == nil {
			stamp = time.Now().UTC().AppendFormat(nil, time.RFC3339Nano)
		}
		s.out = append(append(append(append(append(s.out, stamp...), ' '), s.stream...), " F "...), s.buf[:i+1]...)
		s.buf = s.buf[i+1:]
	}
	if len(s.out) == 0 {
		return len(p), nil
	}
	s.l.mu.Lock()
	_, err := s.l.f.Write(s.out)
	s.l.mu.Unlock()
	if err != nil {
		return 0, err
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
