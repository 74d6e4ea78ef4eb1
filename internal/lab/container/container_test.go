package container

import (
	"os"
	"path/filepath"
	"testing"
)

func TestResolveInRoot(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "run", "x"), 0o755)
	os.MkdirAll(filepath.Join(root, "var"), 0o755)
	os.Symlink("/run", filepath.Join(root, "var", "run"))
	os.Symlink("../run/x", filepath.Join(root, "var", "rel"))
	cases := map[string]string{
		"/var/run/secrets/a": filepath.Join(root, "run/secrets/a"),
		"/var/rel/y":         filepath.Join(root, "run/x/y"),
		"/data":              filepath.Join(root, "data"),
	}
	for in, want := range cases {
		if got := resolveInRoot(root, in); got != want {
			t.Errorf("%s: got %s want %s", in, got, want)
		}
	}
	if got := resolveInRoot("", "/var/run"); got != "/var/run" {
		t.Errorf("no root: %s", got)
	}
}

func TestUnderOverlay(t *testing.T) {
	overlaid := map[string]bool{"/etc": true}
	for p, want := range map[string]bool{"/etc": true, "/etc/ssl/certs": true, "/var/lib": false, "/": false} {
		if got := underOverlay(p, overlaid); got != want {
			t.Errorf("%s: %v, want %v", p, got, want)
		}
	}
}
