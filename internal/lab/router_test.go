package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The routers' configurations: the real BIRD and FRR parse them (both are
// installed by hack/install-deps.sh), with BFD on and off.
func TestRouterConfigsParse(t *testing.T) {
	l := New(t.TempDir(), t.TempDir(), t.TempDir(), nil)
	nodes := Plan(3, 2)
	for _, bfd := range []bool{true, false} {
		c := newRouterConfig(l, nodes, 2)
		c.BFD = bfd
		dir := t.TempDir()
		for _, d := range []string{filepath.Dir(dir), dir} { // bgpd reads it as the frr user
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		bird, frr := filepath.Join(dir, "bird.conf"), filepath.Join(dir, "bgpd.conf")
		if err := os.WriteFile(bird, []byte(birdConfig(c)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(frr, []byte(frrBGPConfig(c)), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("bird", "-p", "-c", bird).CombinedOutput(); err != nil {
			t.Errorf("BIRD refuses its configuration (bfd %v): %v %s\n%s", bfd, err, out, birdConfig(c))
		}
		if out, err := exec.Command(filepath.Join(frrDir, "bgpd"), "-C", "-f", frr, "-u", "frr", "-g", "frr").CombinedOutput(); err != nil || strings.Contains(string(out), "[EC ") {
			t.Errorf("FRR refuses its configuration (bfd %v): %v %s\n%s", bfd, err, out, frrBGPConfig(c))
		}
		for _, n := range nodes {
			if !strings.Contains(birdConfig(c), "neighbor "+n.IP.String()+" as 64512") || !strings.Contains(frrBGPConfig(c), "neighbor "+n.IP.String()+" peer-group nodes") {
				t.Errorf("node %s has no session", n.Name)
			}
		}
		if strings.Contains(birdConfig(c), "bfd on;") != bfd || strings.Contains(frrBGPConfig(c), "bfd profile weft") != bfd {
			t.Errorf("BFD %v not as asked", bfd)
		}
	}
}
