package accesslog

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"
	_ "time/tzdata" // the zone test must not depend on the machine's zoneinfo
)

// slogLine is the line log/slog's TextHandler writes for r, the form the
// access records had when they went through slog.
func slogLine(now time.Time, component string, r *Record) string {
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, nil).WithAttrs([]slog.Attr{slog.String("component", component)})
	rec := slog.NewRecord(now, slog.LevelInfo, "request", 0)
	rec.AddAttrs(slog.String("method", string(r.Method)), slog.String("host", string(r.Host)), slog.String("path", string(r.Path)),
		slog.Int("status", r.Status), slog.String("client", r.Client), slog.String("ingress", r.Ingress), slog.Duration("took", r.Took))
	_ = h.Handle(context.Background(), rec)
	return buf.String()
}

func check(t *testing.T, r *Record) {
	t.Helper()
	now := time.Date(2026, 12, 5, 7, 8, 9, 123456789, time.FixedZone("x", 3600))
	got := string(Append(nil, now, "ingress-proxy", r))
	if want := slogLine(now, "ingress-proxy", r); got != want {
		t.Errorf("record differs from slog's text form:\n got %q\nwant %q", got, want)
	}
}

func TestRecordsReadAsSlogText(t *testing.T) {
	for _, r := range []Record{
		{Method: []byte("GET"), Host: []byte("app.example.com"), Path: []byte("/hostname"), Status: 200, Client: "10.0.0.1:4242", Ingress: "default/web", Took: 1234567},
		{Method: []byte("POST"), Host: nil, Path: []byte("/a b=c"), Status: 502, Client: "[fd00::1]:80", Ingress: "none", Took: 0},
		{Method: []byte("GET"), Host: []byte("evil\nlevel=ERROR msg=x"), Path: []byte("/\"quoted\"\\back"), Status: 404, Client: "", Ingress: "misdirected"},
		{Method: []byte("GET"), Host: []byte("bücher.example"), Path: []byte("/\u00a0nbsp/\u200bzw/\xff\xfe"), Status: 301, Ingress: "ns/x", Took: 3 * time.Second},
		{Method: []byte("GET"), Host: []byte("h"), Path: []byte("/\x7f\x01\t"), Status: 200, Ingress: "ns/y", Took: 999},
		{Method: []byte("GET"), Host: []byte("h"), Path: []byte("/del\x7f"), Status: 200, Ingress: "ns/y", Took: 999},
	} {
		check(t, &r)
	}
}

func FuzzRecordsReadAsSlogText(f *testing.F) {
	f.Add("app.example.com", "/x", "ns/web")
	f.Add("a=b", "/\r\n", "")
	f.Fuzz(func(t *testing.T, host, path, ingress string) {
		check(t, &Record{Method: []byte("GET"), Host: []byte(host), Path: []byte(path), Status: 200, Client: "1.2.3.4:5", Ingress: ingress, Took: 42})
	})
}

func TestWriteIsOneWritePerRecord(t *testing.T) {
	var w countingWriter
	l := New(&w, "ingress-proxy")
	l.Write(&Record{Method: []byte("GET"), Host: []byte("h"), Path: []byte("/"), Status: 200, Ingress: "x"})
	l.Write(&Record{Method: []byte("GET"), Host: []byte("h"), Path: []byte("/2"), Status: 200, Ingress: "x"})
	if w.writes != 2 || bytes.Count(w.buf.Bytes(), []byte("\n")) != 2 {
		t.Fatalf("writes %d, lines %q", w.writes, w.buf.String())
	}
	var nilLog *Log
	nilLog.Write(&Record{}) // no records kept: a nil Log drops them
}

type countingWriter struct {
	buf    bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) { w.writes++; return w.buf.Write(p) }

// The cached time field must read exactly as slog formats it: across
// second boundaries, in zones whose offset changes, in any order.
func TestCachedStampsMatchFormat(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	locs := []*time.Location{time.UTC, time.FixedZone("x", 3600+1800), ny}
	// 2026-03-08 07:00 UTC is New York's change to daylight time.
	base := time.Date(2026, 3, 8, 6, 59, 58, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 2))
	var s stamps
	for i := 0; i < 20000; i++ {
		now := base.Add(time.Duration(rng.Int64N(int64(4 * time.Second)))).In(locs[rng.IntN(len(locs))])
		got := string(s.append(nil, now))
		want := "time=" + now.Truncate(time.Millisecond).Format(stampLayout)
		if got != want {
			t.Fatalf("%v: got %q, want %q", now, got, want)
		}
	}
}
