package proxy

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestConntrackSysctls(t *testing.T) {
	got := DefaultConntrack.Sysctls()
	want := map[string]string{"nf_conntrack_tcp_timeout_established": "86400", "nf_conntrack_tcp_timeout_close_wait": "3600"}
	if len(got) != len(want) {
		t.Fatalf("defaults: %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if got := (Conntrack{TCPBeLiberal: true}).Sysctls(); len(got) != 1 || got["nf_conntrack_tcp_be_liberal"] != "1" {
		t.Errorf("liberal only: %v", got)
	}
	if got := (Conntrack{TCPCloseWait: 90 * time.Second}).Sysctls(); got["nf_conntrack_tcp_timeout_close_wait"] != "90" || len(got) != 1 {
		t.Errorf("close wait 90s: %v", got)
	}
}

func TestApplySysctls(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "nf_conntrack_tcp_timeout_close_wait")
	if err := os.WriteFile(path, []byte("60\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ApplySysctls(dir, map[string]string{"nf_conntrack_tcp_timeout_close_wait": "3600"}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "3600" {
		t.Errorf("close wait = %q, want 3600", b)
	}
	// A missing file (module not loaded, or another kernel) is an error
	// the caller reports, not a silent success.
	if err := ApplySysctls(filepath.Join(dir, "missing"), map[string]string{"x": "1"}); err == nil {
		t.Error("want an error for a missing sysctl file")
	}
}
