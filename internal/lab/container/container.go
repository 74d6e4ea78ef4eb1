// Package container starts a lab container process: in the pod's network
// namespace, in a mount namespace of its own where the pod's resolv.conf,
// hosts file and volumes are bind-mounted, with the pod's hostname. It is
// the lab's stand-in for a container runtime; images are not pulled, the
// command runs from the host's filesystem.
package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount is one bind mount into the container.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Spec is everything the runner needs besides the command and env.
type Spec struct {
	NetNS    string  `json:"netns"` // path, e.g. /run/netns/weft-pod-UID
	Hostname string  `json:"hostname,omitempty"`
	Mounts   []Mount `json:"mounts,omitempty"`
	WorkDir  string  `json:"workDir,omitempty"`
	// Scratch is a per-pod directory for overlay layers that create
	// missing mount points without touching the host's filesystem.
	Scratch string `json:"scratch,omitempty"`
}

// Load reads a spec file.
func Load(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := &Spec{}
	return s, json.Unmarshal(b, s)
}

// Save writes a spec file.
func (s *Spec) Save(path string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// Exec enters the namespaces, sets up mounts and replaces the current
// process with argv. It returns only on error.
func Exec(s *Spec, argv []string) error {
	if len(argv) == 0 {
		return errors.New("no command")
	}
	// Namespaces are per thread until exec; exec keeps this thread's.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_NEWUTS); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if s.NetNS != "" {
		fd, err := unix.Open(s.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open netns %s: %w", s.NetNS, err)
		}
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter netns %s: %w", s.NetNS, err)
		}
		unix.Close(fd)
		// /sys should describe the pod's network namespace.
		if err := unix.Unmount("/sys", unix.MNT_DETACH); err == nil {
			_ = unix.Mount("sysfs", "/sys", "sysfs", 0, "")
		}
	}
	if s.Hostname != "" {
		if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
	}
	for i, m := range s.Mounts {
		if err := ensureMountpoint(m, s.Scratch, i); err != nil {
			return err
		}
		if err := unix.Mount(m.Source, m.Target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", m.Source, m.Target, err)
		}
		if m.ReadOnly {
			if err := unix.Mount("", m.Target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("remount %s read-only: %w", m.Target, err)
			}
		}
	}
	if s.WorkDir != "" {
		if err := os.Chdir(s.WorkDir); err != nil {
			return fmt.Errorf("workingDir %s: %w", s.WorkDir, err)
		}
	}
	path := argv[0]
	if !strings.Contains(path, "/") {
		p, err := exec.LookPath(path)
		if err != nil {
			return fmt.Errorf("command %q: %w", path, err)
		}
		path = p
	}
	return unix.Exec(path, argv, os.Environ())
}

// ensureMountpoint makes m.Target exist. When it does not, the nearest
// existing parent is covered with an overlay whose upper layer lives in
// the pod's scratch dir, so the target can be created there without
// changing the host's filesystem.
func ensureMountpoint(m Mount, scratch string, idx int) error {
	srcInfo, err := os.Stat(m.Source)
	if err != nil {
		return fmt.Errorf("mount source %s: %w", m.Source, err)
	}
	if _, err := os.Lstat(m.Target); err == nil {
		return nil
	}
	parent := filepath.Dir(m.Target)
	for {
		if fi, err := os.Stat(parent); err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("mount target %s: %s is not a directory", m.Target, parent)
			}
			break
		}
		parent = filepath.Dir(parent)
	}
	if parent == "/" {
		return fmt.Errorf("mount target %s: cannot create a new top-level directory in the lab", m.Target)
	}
	if scratch == "" {
		return fmt.Errorf("mount target %s does not exist and no scratch dir is set", m.Target)
	}
	upper := filepath.Join(scratch, fmt.Sprintf("overlay-%d", idx), "upper")
	work := filepath.Join(scratch, fmt.Sprintf("overlay-%d", idx), "work")
	if err := os.MkdirAll(upper, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", parent, upper, work)
	if err := unix.Mount("overlay", parent, "overlay", 0, opts); err != nil {
		return fmt.Errorf("overlay on %s for %s: %w", parent, m.Target, err)
	}
	if srcInfo.IsDir() {
		return os.MkdirAll(m.Target, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(m.Target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(m.Target, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}
