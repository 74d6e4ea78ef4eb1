package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	ok := "GET /a/b?x=%20 HTTP/1.1\r\nHost: app.example.com:8080\r\nx-Mixed-Case: v\r\nConnection: keep-alive\r\n\r\n"
	var r Request
	if !ParseRequest([]byte(ok), &r) {
		t.Fatalf("plain GET refused")
	}
	if string(r.Method) != "GET" || string(r.Target) != "/a/b?x=%20" || string(r.Path) != "/a/b" || string(r.Host) != "app.example.com:8080" ||
		r.ContentLength != 0 || r.HasLength || r.Close || len(r.Lines) != 3 || r.Len != len(ok) {
		t.Errorf("parsed %+v", r)
	}
	post := "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\nConnection: close\r\n\r\n"
	if !ParseRequest([]byte(post), &r) || r.ContentLength != 7 || !r.HasLength || !r.Close {
		t.Errorf("POST: %+v", r)
	}
	// Each is left to net/http: it decides (most it refuses).
	for name, head := range map[string]string{
		"two lengths":             "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
		"length and chunked":      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		"chunked":                 "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"signed length":           "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
		"length with space":       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 1\r\n\r\n",
		"empty length":            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
		"huge length":             "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
		"bare LF":                 "GET / HTTP/1.1\nHost: a\n\n",
		"bare LF in a header":     "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
		"bare CR":                 "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
		"folded header":           "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n",
		"space before colon":      "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
		"no colon":                "GET / HTTP/1.1\r\nHost: a\r\nBroken\r\n\r\n",
		"NUL in a value":          "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
		"no host":                 "GET / HTTP/1.1\r\nX: y\r\n\r\n",
		"two hosts":               "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"host with a slash":       "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
		"HTTP/1.0":                "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
		"absolute form":           "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"asterisk":                "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"percent in path":         "GET /%2e%2e/admin HTTP/1.1\r\nHost: a\r\n\r\n",
		"fragment":                "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
		"two spaces":              "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
		"upgrade":                 "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"connection names header": "GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret\r\n\r\n",
		"expect":                  "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
		"h2c preface":             "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"connect":                 "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
		"lowercase method":        "get / HTTP/1.1\r\nHost: a\r\n\r\n",
		"bytes after the head":    "GET / HTTP/1.1\r\nHost: a\r\n\r\nX",
	} {
		if ParseRequest([]byte(head), &r) {
			t.Errorf("%s: taken by the fast path: %q", name, head)
		}
	}
}

func TestHeadEnd(t *testing.T) {
	for in, want := range map[string]int{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest": 27,
		"GET / HTTP/1.1\nHost: a\n\nrest":       24,
		"GET / HTTP/1.1\r\nHost: a\r\n":         -1,
		"":                                      -1,
	} {
		if got := HeadEnd([]byte(in)); got != want {
			t.Errorf("HeadEnd(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestParseResponse(t *testing.T) {
	var r Response
	for _, c := range []struct {
		head          string
		status        int
		length        int64
		chunked, stop bool
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 200, 5, false, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 200, 5, false, false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 200, -1, true, false},
		{"HTTP/1.1 204 No Content\r\n\r\n", 204, -1, false, false},
		{"HTTP/1.1 200\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", 200, 1, false, true},
		{"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", 200, 1, false, true},
		{"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", 200, 1, false, false},
	} {
		if err := ParseResponse([]byte(c.head), &r); err != nil || r.Status != c.status || r.ContentLength != c.length || r.Chunked != c.chunked || r.Close != c.stop {
			t.Errorf("%q: %+v %v", c.head, r, err)
		}
	}
	for _, head := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 +20 OK\r\n\r\n",
		"HTTP/2.0 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX : y\r\n\r\n",
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", // RFC 9112 §6.1: faulty framing
	} {
		if err := ParseResponse([]byte(head), &r); err == nil {
			t.Errorf("%q accepted", head)
		}
	}
}

// FuzzParseRequest holds the fast path to net/http: whatever it takes,
// net/http reads alike (method, target, host, body length, no chunking),
// so a request can never mean two things on the two paths.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x?y HTTP/1.1\r\nHost: a:1\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: \t\xff\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	var r Request
	f.Fuzz(func(t *testing.T, b []byte) {
		n := HeadEnd(b)
		if n < 0 || !ParseRequest(b[:n], &r) {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b[:n])))
		if err != nil {
			t.Fatalf("fast path took %q, net/http refuses it: %v", b[:n], err)
		}
		if req.Method != string(r.Method) || req.RequestURI != string(r.Target) || req.Host != string(r.Host) ||
			req.ContentLength != r.ContentLength || len(req.TransferEncoding) > 0 || req.Close != r.Close {
			t.Fatalf("%q: net/http reads %s %s host %q length %d close %v; fast path %+v", b[:n], req.Method, req.RequestURI, req.Host, req.ContentLength, req.Close, r)
		}
		if strings.Contains(req.URL.Path, "%") || req.URL.Path != string(r.Path) {
			t.Fatalf("%q: path %q (net/http %q)", b[:n], r.Path, req.URL.Path)
		}
		for _, l := range r.Lines {
			if !ValidHeaderLine(l) {
				t.Fatalf("%q: invalid line %q kept", b[:n], l)
			}
		}
	})
}

// FuzzParseResponse: a head it takes, net/http's client reads with the
// same status and framing.
func FuzzParseResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.0 204 OK\r\nConnection: keep-alive\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	var r Response
	f.Fuzz(func(t *testing.T, b []byte) {
		n := HeadEnd(b)
		if n < 0 || ParseResponse(b[:n], &r) != nil || r.Status < 200 {
			return
		}
		get, _ := http.NewRequest("GET", "http://a/", nil)
		resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(bytes.NewReader(b[:n]), strings.NewReader(""))), get)
		if err != nil {
			t.Fatalf("fast path took %q, net/http refuses it: %v", b[:n], err)
		}
		chunked := len(resp.TransferEncoding) == 1 && resp.TransferEncoding[0] == "chunked"
		if resp.StatusCode != r.Status || chunked != r.Chunked || (!r.Chunked && r.Status != 204 && r.Status != 304 && resp.ContentLength != r.ContentLength) {
			t.Fatalf("%q: net/http reads %d length %d %v; fast path %+v", b[:n], resp.StatusCode, resp.ContentLength, resp.TransferEncoding, r)
		}
	})
}
