package kubelet

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Lines reach the file whole and in order whatever the writes' split,
// each in the CRI form "TIMESTAMP STREAM F MESSAGE"; a partial line waits
// for its end.
func TestLogLinesInCRIForm(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	lw, err := newLogWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	defer lw.Close()
	w := lw.stream("stderr")
	for _, p := range []string{"first line\nsec", "ond line\nthird\nfourth\n", "partial"} {
		if n, err := w.Write([]byte(p)); err != nil || n != len(p) {
			t.Fatalf("write %q: %d, %v", p, n, err)
		}
	}
	lines, err := readLogLines(path)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, l := range lines {
		if _, err := time.Parse(time.RFC3339Nano, l.ts); err != nil {
			t.Errorf("timestamp %q: %v", l.ts, err)
		}
		msgs = append(msgs, l.msg)
	}
	if got := strings.Join(msgs, "|"); got != "first line|second line|third|fourth" {
		t.Errorf("messages %q", got)
	}
	raw, _ := os.ReadFile(path)
	for _, line := range strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n") {
		if f := strings.SplitN(line, " ", 4); len(f) != 4 || f[1] != "stderr" || f[2] != "F" {
			t.Errorf("line %q is not TIMESTAMP stderr F MESSAGE", line)
		}
	}
}
