// Package container starts a lab container process: in the pod's network
// namespace, in a mount namespace of its own where the pod's resolv.conf,
// hosts file and volumes are bind-mounted, with the pod's hostname. It is
// the lab's stand-in for a container runtime. A container of a loaded
// image (Spec.RootFS) runs in that image's files; any other runs its
// command from the host's filesystem.
package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
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
	// RootFS, when set, is an unpacked image: the container runs in it
	// (under a writable overlay of its own) instead of the host's files.
	RootFS string `json:"rootfs,omitempty"`
	// NodeRoot, when set, is a lab node's own root directory: the command
	// runs chrooted there (as a program on that node would), with the
	// machine's /proc, /dev, /sys and /run/netns bound in.
	NodeRoot string `json:"nodeRoot,omitempty"`
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
	// Every run (containers, exec, exec probes) gets its own scratch: an
	// overlay's work dir cannot be shared by two mounts at once.
	if s.Scratch != "" {
		s.Scratch = filepath.Join(s.Scratch, strconv.Itoa(os.Getpid()))
	}
	// A mount point in a new top-level directory (/data, /agnhost) cannot
	// be made by an overlay on /: build a root of bind mounts on a tmpfs
	// instead and chroot into it at the end.
	root, writable := "", false
	if s.RootFS != "" {
		if s.Scratch == "" {
			return errors.New("an image root needs a scratch dir")
		}
		root, writable = filepath.Join(s.Scratch, "rootfs"), true
		if err := imageRoot(s.RootFS, s.Scratch, root); err != nil {
			return err
		}
	} else if s.NodeRoot != "" {
		root, writable = s.NodeRoot, true
		if err := systemMounts(root, "/run/netns"); err != nil {
			return err
		}
	} else if s.needsNewRoot() {
		if s.Scratch == "" {
			return errors.New("a new top-level mount point needs a scratch dir")
		}
		root = filepath.Join(s.Scratch, "rootfs")
		if err := buildRoot(root); err != nil {
			return err
		}
	}
	overlaid := map[string]bool{}
	for i, m := range s.Mounts {
		target := resolveInRoot(root, m.Target)
		m := Mount{Source: m.Source, Target: target, ReadOnly: m.ReadOnly}
		if err := ensureMountpoint(m, s.Scratch, i, root, writable, overlaid); err != nil {
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
	if root != "" {
		if err := unix.Chroot(root); err != nil {
			return fmt.Errorf("chroot: %w", err)
		}
		if err := os.Chdir("/"); err != nil {
			return err
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
// changing the host's filesystem. A parent already under one of this
// container's overlays (overlaid) takes the mount point directly: a
// second overlay would hide the mounts made under the first.
func ensureMountpoint(m Mount, scratch string, idx int, root string, writable bool, overlaid map[string]bool) error {
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
		return fmt.Errorf("mount target %s: new top-level directories need a new root", m.Target)
	}
	if (root != "" && (parent == root || writable)) || underOverlay(parent, overlaid) {
		// The new root is our own tmpfs, or the parent already has our
		// overlay: create the mount point directly.
		return createMountpoint(m.Target, srcInfo.IsDir())
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
	overlaid[parent] = true
	return createMountpoint(m.Target, srcInfo.IsDir())
}

// underOverlay: p or a directory above it has one of our overlays.
func underOverlay(p string, overlaid map[string]bool) bool {
	for {
		if overlaid[p] {
			return true
		}
		up := filepath.Dir(p)
		if up == p {
			return false
		}
		p = up
	}
}

func createMountpoint(target string, dir bool) error {
	if dir {
		return os.MkdirAll(target, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// imageRoot mounts an image's files at root under a writable overlay in
// scratch (the image itself stays unchanged for every other container),
// with the host's /proc and /dev and a /sys of the current network
// namespace.
func imageRoot(image, scratch, root string) error {
	upper, work := filepath.Join(scratch, "image-upper"), filepath.Join(scratch, "image-work")
	for _, d := range []string{root, upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", image, upper, work)
	if err := unix.Mount("overlay", root, "overlay", 0, opts); err != nil {
		return fmt.Errorf("image overlay on %s: %w", root, err)
	}
	for _, d := range []string{"tmp", "run"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	return systemMounts(root)
}

// systemMounts binds the machine's /proc and /dev (and extra) into root
// and mounts a /sys of the current network namespace there.
func systemMounts(root string, extra ...string) error {
	for _, d := range append([]string{"/proc", "/dev", "/sys"}, extra...) {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	for _, d := range append([]string{"/proc", "/dev"}, extra...) {
		if err := unix.Mount(d, filepath.Join(root, d), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s into %s: %w", d, root, err)
		}
	}
	if err := unix.Mount("sysfs", filepath.Join(root, "sys"), "sysfs", 0, ""); err != nil {
		return fmt.Errorf("sysfs in %s: %w", root, err)
	}
	return nil
}

// needsNewRoot reports whether some mount target's nearest existing
// ancestor is / itself.
func (s *Spec) needsNewRoot() bool {
	for _, m := range s.Mounts {
		p := m.Target
		for {
			if _, err := os.Lstat(p); err == nil {
				break
			}
			p = filepath.Dir(p)
		}
		if p == "/" && m.Target != "/" {
			return true
		}
	}
	return false
}

// buildRoot mirrors the host's top-level entries into a tmpfs at root:
// directories and files as recursive bind mounts, symlinks as symlinks.
// New top-level directories can then be created in the tmpfs.
func buildRoot(root string) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("tmpfs root: %w", err)
	}
	entries, err := os.ReadDir("/")
	if err != nil {
		return err
	}
	for _, e := range entries {
		src := "/" + e.Name()
		dst := filepath.Join(root, e.Name())
		fi, err := os.Lstat(src)
		if err != nil {
			continue
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			link, err := os.Readlink(src)
			if err != nil {
				return err
			}
			if err := os.Symlink(link, dst); err != nil {
				return err
			}
			continue
		case fi.IsDir():
			if err := os.Mkdir(dst, fi.Mode().Perm()); err != nil {
				return err
			}
		default:
			f, err := os.Create(dst)
			if err != nil {
				return err
			}
			f.Close()
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s into new root: %w", src, err)
		}
	}
	return nil
}

// resolveInRoot resolves symlinks in p as if root were "/", so that an
// absolute link such as /var/run -> /run stays inside the new root.
func resolveInRoot(root, p string) string {
	if root == "" {
		return p
	}
	parts := strings.Split(filepath.Clean("/"+p), "/")
	cur, hops := "/", 0
	for i := 0; i < len(parts); i++ {
		if parts[i] == "" {
			continue
		}
		next := filepath.Join(cur, parts[i])
		fi, err := os.Lstat(filepath.Join(root, next))
		if err == nil && fi.Mode()&os.ModeSymlink != 0 && hops < 40 {
			link, err := os.Readlink(filepath.Join(root, next))
			if err == nil {
				hops++
				if !filepath.IsAbs(link) {
					link = filepath.Join(cur, link)
				}
				parts = strings.Split(filepath.Clean(link+"/"+strings.Join(parts[i+1:], "/")), "/")
				i, cur = -1, "/"
				continue
			}
		}
		cur = next
	}
	return filepath.Join(root, cur)
}
