package testserver

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFileRecords(t *testing.T) {
	f := filepath.Join(t.TempDir(), "records")
	if err := os.WriteFile(f, []byte("api.outside.test 5 203.0.113.10 203.0.113.11\nbad.outside.test x 1.2.3.4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ttl, ips := fileRecords(f, "API.outside.test.")
	if ttl != 5 || len(ips) != 2 || ips[1].String() != "203.0.113.11" {
		t.Errorf("api: ttl %d ips %v", ttl, ips)
	}
	if _, ips := fileRecords(f, "bad.outside.test."); ips != nil {
		t.Errorf("a line with a bad TTL answered %v", ips)
	}
	if _, ips := fileRecords(f+"-none", "api.outside.test."); ips != nil {
		t.Errorf("a missing file answered %v", ips)
	}
}
