package proxy

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// sysConn reads and writes a socket of the fast path with raw system
// calls, still waiting through Go's poller (and its deadlines) when the
// socket is not ready. Through net.Conn each read and write enters the
// scheduler's syscall state: when a write carries the loopback or veth
// delivery to its receiver it lasts long enough that the runtime's
// monitor hands the P to another thread, and the monitor keeps waking
// every 20 µs to look. These calls never block (the socket is
// non-blocking), so nothing needs the hand-over.
type sysConn struct {
	rc      syscall.RawConn
	p       []byte
	n       int
	err     error
	readFn  func(fd uintptr) bool
	writeFn func(fd uintptr) bool
}

// newSysConn returns c's raw reader and writer, or c itself when it has
// no file descriptor (tests' in-memory pipes).
func newSysConn(c net.Conn) io.ReadWriter {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	s := &sysConn{rc: rc}
	s.readFn, s.writeFn = s.read, s.write
	return s
}

func (s *sysConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.p, s.n, s.err = p, 0, nil
	err := s.rc.Read(s.readFn)
	s.p = nil
	switch {
	case err != nil:
		return 0, err
	case s.err != nil:
		return 0, s.err
	case s.n == 0:
		return 0, io.EOF
	}
	return s.n, nil
}

// read is one read(2); false (wait for readability) on EAGAIN.
func (s *sysConn) read(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&s.p[0])), uintptr(len(s.p)))
		switch e {
		case 0:
			s.n = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		s.err = e
		return true
	}
}

func (s *sysConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.p, s.n, s.err = p, 0, nil
	err := s.rc.Write(s.writeFn)
	n := s.n
	s.p = nil
	if err == nil {
		err = s.err
	}
	return n, err
}

// write writes all of s.p, resuming after each wait for writability.
func (s *sysConn) write(fd uintptr) bool {
	for s.n < len(s.p) {
		rest := s.p[s.n:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch {
		case e == 0 && n == 0:
			s.err = io.ErrShortWrite
			return true
		case e == 0:
			s.n += int(n)
			continue
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return false
		}
		s.err = e
		return true
	}
	return true
}
