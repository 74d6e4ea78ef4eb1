package kubelet

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"weft.dev/weft/internal/testutil"
)

func TestWritableUsageCountsFiles(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(i) // not sparse
	}
	if err := os.WriteFile(filepath.Join(root, "a", "b", "file"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	// Through a symbolic link, as /proc/PID/root is.
	link := filepath.Join(t.TempDir(), "root")
	if err := os.Symlink(root, link); err != nil {
		t.Fatal(err)
	}
	got, err := writableUsage(link)
	if err != nil {
		t.Fatal(err)
	}
	if got < 3<<20 || got > 4<<20 {
		t.Fatalf("usage %d bytes, want about 3 MiB", got)
	}
	if _, err := writableUsage(filepath.Join(root, "missing")); err == nil {
		t.Error("no error for a missing root")
	}
}

// What is mounted on the root (a lab container's bound host directories)
// is not the container's writing.
func TestPrivilegedWritableUsageSkipsMounts(t *testing.T) {
	testutil.RequireRoot(t)
	root := t.TempDir()
	mnt := filepath.Join(root, "usr")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=16m"); err != nil {
		t.Fatal(err)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(mnt, "big"), make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "own"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := writableUsage(root)
	if err != nil {
		t.Fatal(err)
	}
	if got < 1<<20 || got >= 8<<20 {
		t.Fatalf("usage %d bytes, want the 1 MiB written on the root only", got)
	}
}
