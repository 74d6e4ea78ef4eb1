// Package h1 reads HTTP/1.1 message heads for weft ingress's fast path.
// It accepts only the plainest form of a request (the one nearly every
// client sends) and says "not for me" for anything else, which then goes
// to net/http: a request this package accepts is one net/http would read
// the same way (same method, target, host and body length), so the two
// can never frame a message differently (request smuggling).
package h1

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
)

// Request is a request head, its slices pointing into the bytes parsed.
type Request struct {
	Method, Target []byte
	// Path is Target up to its query.
	Path []byte
	Host []byte
	// ContentLength is the body's length (0 without a body).
	ContentLength int64
	// HasLength: the request carried a Content-Length header.
	HasLength bool
	// Close: the client asked to close the connection after the response.
	Close bool
	// Lines are the header lines, each without its CRLF.
	Lines [][]byte
	// Len is the length of the head, its blank line included.
	Len int
}

var crlf = []byte("\r\n")

// HeadEnd returns the length of the head at the start of b (through its
// blank line, CRLF or a bare LF, which ParseRequest then refuses), or -1
// when b holds no complete head yet.
func HeadEnd(b []byte) int {
	for off := 0; ; {
		j := bytes.IndexByte(b[off:], '\n')
		if j < 0 {
			return -1
		}
		i := off + j
		off = i + 1
		switch {
		case i+1 < len(b) && b[i+1] == '\n':
			return i + 2
		case i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n':
			return i + 3
		}
	}
}

// methods the fast path forwards; CONNECT, PRI (HTTP/2's preface) and
// anything unusual go to net/http.
var methods = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true, "PATCH": true, "OPTIONS": true}

// ParseRequest reads the complete head b (as HeadEnd measured it) into r
// (reusing r.Lines). It returns false for anything but an HTTP/1.1
// request in origin form with a Host, at most one Content-Length, no
// Transfer-Encoding, no Upgrade or Expect, no percent-encoding in its
// path, strict CRLF line ends and no folded or malformed header lines.
func ParseRequest(b []byte, r *Request) bool {
	*r = Request{Lines: r.Lines[:0], Len: len(b)}
	line, rest, ok := cutLine(b)
	if !ok {
		return false
	}
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 || !methods[string(line[:sp1])] {
		return false
	}
	r.Method = line[:sp1]
	target, version, ok := bytes.Cut(line[sp1+1:], []byte(" "))
	if !ok || string(version) != "HTTP/1.1" || !validTarget(target) {
		return false
	}
	r.Target, r.Path = target, target
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		r.Path = target[:i]
	}
	hosts := 0
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return false
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := splitHeader(line)
		if !ok {
			return false
		}
		switch {
		case equalFold(name, "host"):
			hosts++
			r.Host = value
		case equalFold(name, "content-length"):
			if r.HasLength {
				return false
			}
			n, ok := parseLength(value)
			if !ok {
				return false
			}
			r.ContentLength, r.HasLength = n, true
		case equalFold(name, "transfer-encoding"), equalFold(name, "upgrade"), equalFold(name, "expect"),
			equalFold(name, "http2-settings"):
			return false
		case equalFold(name, "connection"):
			if !r.connection(value) {
				return false
			}
		}
		r.Lines = append(r.Lines, line)
	}
	return len(rest) == 0 && hosts == 1 && validHost(r.Host)
}

// connection takes the tokens "close" and "keep-alive" only: any other
// names a header to drop or asks for an upgrade, which net/http handles.
func (r *Request) connection(value []byte) bool {
	for rest := value; rest != nil; {
		var tok []byte
		tok, rest = nextToken(rest)
		switch {
		case equalFold(tok, "close"):
			r.Close = true
		case equalFold(tok, "keep-alive"), len(tok) == 0:
		default:
			return false
		}
	}
	return true
}

// nextToken splits a comma-separated list's first element, trimmed, from
// the rest (nil after the last).
func nextToken(list []byte) (tok, rest []byte) {
	tok, rest, found := bytes.Cut(list, []byte(","))
	if !found {
		rest = nil
	}
	return bytes.TrimSpace(tok), rest
}

// Response is a response head from a backend.
type Response struct {
	Status int
	// Reason is the status line's reason phrase.
	Reason []byte
	// ContentLength is the body's length, -1 when unknown: chunked, or
	// until the backend closes the connection (UntilClose).
	ContentLength int64
	Chunked       bool
	// Close: the connection cannot be used again after this response.
	Close bool
	Lines [][]byte
}

// ErrBadResponse: the backend's head is malformed or frames its body
// ambiguously; the proxy answers 502 and drops the connection.
var ErrBadResponse = errors.New("malformed response head from the backend")

// ParseResponse reads a backend's complete response head b into r.
func ParseResponse(b []byte, r *Response) error {
	*r = Response{Lines: r.Lines[:0], ContentLength: -1}
	line, rest, ok := cutLine(b)
	if !ok || len(line) < 12 || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return ErrBadResponse
	}
	switch string(line[:8]) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		r.Close = true // unless it says keep-alive
	default:
		return ErrBadResponse
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil || code < 100 || line[9] == '+' || line[9] == '-' {
		return ErrBadResponse
	}
	r.Status = code
	if len(line) > 13 {
		r.Reason = line[13:]
	}
	lengths, keepAlive := 0, false
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return ErrBadResponse
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := splitHeader(line)
		if !ok {
			return ErrBadResponse
		}
		switch {
		case equalFold(name, "content-length"):
			n, ok := parseLength(value)
			if !ok || (lengths > 0 && n != r.ContentLength) {
				return ErrBadResponse
			}
			lengths++
			r.ContentLength = n
		case equalFold(name, "transfer-encoding"):
			// Only chunked, once; never in HTTP/1.0, whose framing RFC 9112
			// §6.1 calls faulty when it has one (net/http reads until close).
			if r.Chunked || !equalFold(bytes.TrimSpace(value), "chunked") || string(b[:8]) == "HTTP/1.0" {
				return ErrBadResponse
			}
			r.Chunked = true
		case equalFold(name, "connection"):
			for rest := value; rest != nil; {
				var tok []byte
				tok, rest = nextToken(rest)
				r.Close = r.Close || equalFold(tok, "close")
				keepAlive = keepAlive || equalFold(tok, "keep-alive")
			}
		}
		r.Lines = append(r.Lines, line)
	}
	if len(rest) != 0 {
		return ErrBadResponse
	}
	if keepAlive && string(b[:8]) == "HTTP/1.0" && !r.Chunked && r.ContentLength >= 0 {
		r.Close = false
	}
	if r.Chunked {
		r.ContentLength = -1 // Transfer-Encoding wins over Content-Length
	}
	return nil
}

// UntilClose reports whether the response's body, if it has one, ends
// only when the backend closes the connection.
func (r *Response) UntilClose() bool { return r.ContentLength < 0 && !r.Chunked }

// ValidHeaderLine reports whether line is "Name: value" with a token name
// and no control characters but tab in its value.
func ValidHeaderLine(line []byte) bool {
	_, _, ok := splitHeader(line)
	return ok
}

// NoBody reports whether a response to method with status has no body
// whatever its headers say.
func NoBody(method []byte, status int) bool {
	return string(method) == "HEAD" || status == 204 || status == 304 || (status >= 100 && status < 200)
}

// DropRequest reports whether a request header line is not passed on:
// hop-by-hop (RFC 9110 §7.6.1), framing the proxy writes itself, or the
// client's own forwarding headers (only the proxy's are sent).
func DropRequest(line []byte) bool { return named(line, requestDrop) }

// DropResponse is DropRequest for a backend's response header lines.
func DropResponse(line []byte) bool { return named(line, responseDrop) }

var (
	hopByHop     = []string{"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "content-length"}
	requestDrop  = append(hopByHop[:len(hopByHop):len(hopByHop)], "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto")
	responseDrop = hopByHop
)

func named(line []byte, names []string) bool {
	name, _, _ := bytes.Cut(line, []byte(":"))
	for _, h := range names {
		if equalFold(name, h) {
			return true
		}
	}
	return false
}

// cutLine splits off a line ending in CRLF; a bare CR or LF inside it is
// refused.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.Index(b, crlf)
	if i < 0 {
		return nil, nil, false
	}
	line = b[:i]
	if bytes.IndexByte(line, '\n') >= 0 || bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, false
	}
	return line, b[i+2:], true
}

// splitHeader splits "Name: value": the name a token (no space before the
// colon, no folding), the value without control characters but tab.
func splitHeader(line []byte) (name, value []byte, ok bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return nil, nil, false
	}
	name = line[:i]
	for _, c := range name {
		if !isToken(c) {
			return nil, nil, false
		}
	}
	value = line[i+1:]
	for _, c := range value {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return nil, nil, false
		}
	}
	return name, bytes.Trim(value, " \t"), true
}

func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// validTarget: origin form ("/path?query"), visible ASCII only, no
// fragment and no percent-encoding in the path (routing matches the
// decoded path; net/http decodes it on the slow path).
func validTarget(t []byte) bool {
	if len(t) == 0 || t[0] != '/' {
		return false
	}
	inQuery := false
	for _, c := range t {
		switch {
		case c <= 0x20 || c >= 0x7f || c == '#':
			return false
		case c == '?':
			inQuery = true
		case c == '%' && !inQuery:
			return false
		}
	}
	return true
}

// validHost: a name or address with an optional port, nothing else.
func validHost(h []byte) bool {
	if len(h) == 0 {
		return false
	}
	for _, c := range h {
		ok := c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_' ||
			(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}

func isToken(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// equalFold compares ASCII case-insensitively without allocating.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
