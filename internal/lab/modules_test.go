package lab

import (
	"encoding/json"
	"os/exec"
	"testing"
)

// goModule is the part of `go mod edit -json` this test reads.
type goModule struct {
	Require []struct{ Path, Version string }
	Replace []struct {
		Old struct{ Path string }
		New struct{ Path, Version string }
	}
}

// effectiveVersions maps each required module to the version the build
// uses: its own, or its replacement's.
func effectiveVersions(t *testing.T, dir string) map[string]string {
	t.Helper()
	cmd := exec.Command("go", "mod", "edit", "-json")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod edit -json in %s: %v", dir, err)
	}
	var m goModule
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("%s/go.mod: %v", dir, err)
	}
	v := map[string]string{}
	for _, r := range m.Require {
		v[r.Path] = r.Version
	}
	for _, r := range m.Replace {
		if _, ok := v[r.Old.Path]; ok && r.New.Version != "" {
			v[r.Old.Path] = r.New.Version
		}
	}
	return v
}

// The control plane (lab/k8s) is built with weft's flags so the Go build
// cache compiles the packages both use (client-go, k8s.io/api, x/net...)
// once: that holds only while both modules use the same versions of them.
// A cold `make demo` took about four minutes longer when they drifted.
func TestLabModuleSharesWeftVersions(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	weft := effectiveVersions(t, "../..")
	k8s := effectiveVersions(t, "../../lab/k8s")
	for path, v := range weft {
		if kv, ok := k8s[path]; ok && kv != v {
			t.Errorf("%s: weft uses %s, lab/k8s %s: align them, e.g. (cd lab/k8s && go get %s@%s)", path, v, kv, path, v)
		}
	}
}
