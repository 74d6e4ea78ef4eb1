// Package image loads a container image from an OCI layout into the lab:
// it picks the manifest for this machine's architecture, checks every
// blob against its digest, and unpacks the layers in order into a root
// filesystem that the lab node runs containers from. It is the lab's
// stand-in for a runtime's image pull; a Table maps image references to
// loaded roots.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
)

// Image is an unpacked image: its root filesystem and run defaults.
type Image struct {
	Digest     string   `json:"digest"` // of the manifest
	Root       string   `json:"root"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
}

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Platform  *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform,omitempty"`
}

type index struct {
	Manifests []descriptor `json:"manifests"`
}

type manifest struct {
	Config descriptor   `json:"config"`
	Layers []descriptor `json:"layers"`
}

type config struct {
	Architecture string `json:"architecture"`
	Config       struct {
		Entrypoint []string `json:"Entrypoint"`
		Cmd        []string `json:"Cmd"`
		Env        []string `json:"Env"`
		WorkingDir string   `json:"WorkingDir"`
	} `json:"config"`
}

const (
	indexType    = "application/vnd.oci.image.index.v1+json"
	manifestType = "application/vnd.oci.image.manifest.v1+json"
)

// Unpack loads the image for this machine's architecture from the OCI
// layout in dir into dest/<manifest digest>/rootfs (reused when already
// there) and returns it.
func Unpack(dir, dest string) (*Image, error) {
	var idx index
	if err := readJSON(filepath.Join(dir, "index.json"), &idx); err != nil {
		return nil, fmt.Errorf("image %s: %w", dir, err)
	}
	m, err := pickManifest(dir, idx, runtime.GOARCH)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", dir, err)
	}
	var man manifest
	if err := readBlobJSON(dir, m.Digest, &man); err != nil {
		return nil, err
	}
	var cf config
	if err := readBlobJSON(dir, man.Config.Digest, &cf); err != nil {
		return nil, err
	}
	if cf.Architecture != runtime.GOARCH {
		return nil, fmt.Errorf("image %s: config is for %q, not %s", dir, cf.Architecture, runtime.GOARCH)
	}
	img := &Image{Digest: m.Digest, Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd, Env: cf.Config.Env, WorkingDir: cf.Config.WorkingDir}
	base := filepath.Join(dest, strings.ReplaceAll(m.Digest, ":", "-"))
	img.Root = filepath.Join(base, "rootfs")
	if _, err := os.Stat(filepath.Join(base, "complete")); err == nil {
		return img, nil
	}
	if err := os.RemoveAll(base); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(img.Root, 0o755); err != nil {
		return nil, err
	}
	for _, l := range man.Layers {
		if err := unpackLayer(dir, l, img.Root); err != nil {
			return nil, fmt.Errorf("image %s: layer %s: %w", dir, l.Digest, err)
		}
	}
	return img, os.WriteFile(filepath.Join(base, "complete"), nil, 0o644)
}

// pickManifest follows the layout's index (and a nested image index) to
// the manifest for arch.
func pickManifest(dir string, idx index, arch string) (descriptor, error) {
	for _, d := range idx.Manifests {
		switch {
		case d.MediaType == indexType:
			var inner index
			if err := readBlobJSON(dir, d.Digest, &inner); err != nil {
				return descriptor{}, err
			}
			if m, err := pickManifest(dir, inner, arch); err == nil {
				return m, nil
			}
		case d.MediaType == manifestType && (d.Platform == nil || d.Platform.Architecture == arch):
			return d, nil
		}
	}
	return descriptor{}, fmt.Errorf("no manifest for linux/%s", arch)
}

// blobPath returns the path of a blob, refusing digests that are not
// sha256 hex (they name files).
func blobPath(dir, digest string) (string, error) {
	hexd, ok := strings.CutPrefix(digest, "sha256:")
	if _, err := hex.DecodeString(hexd); !ok || err != nil || len(hexd) != 64 {
		return "", fmt.Errorf("digest %q: want sha256:<64 hex>", digest)
	}
	return filepath.Join(dir, "blobs", "sha256", hexd), nil
}

// readBlob reads a whole blob and checks its digest.
func readBlob(dir, digest string) ([]byte, error) {
	p, err := blobPath(dir, digest)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(b); "sha256:"+hex.EncodeToString(sum[:]) != digest {
		return nil, fmt.Errorf("blob %s does not match its digest", digest)
	}
	return b, nil
}

func readBlobJSON(dir, digest string, v any) error {
	b, err := readBlob(dir, digest)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func readJSON(p string, v any) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// unpackLayer extracts one layer into root through an os.Root, so no
// entry (by name or through a symlink) can write outside it.
func unpackLayer(dir string, l descriptor, root string) error {
	b, err := readBlob(dir, l.Digest)
	if err != nil {
		return err
	}
	var r io.Reader = bytes.NewReader(b)
	if strings.HasSuffix(l.MediaType, "+gzip") || strings.HasSuffix(l.MediaType, ".gzip") {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return err
		}
		defer zr.Close()
		r = zr
	}
	rt, err := os.OpenRoot(root)
	if err != nil {
		return err
	}
	defer rt.Close()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := extract(rt, h, tr); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
	}
}

func extract(rt *os.Root, h *tar.Header, r io.Reader) error {
	name := path.Clean("/" + h.Name)[1:]
	if name == "" {
		return nil
	}
	dirName, base := path.Split(name)
	if dirName != "" {
		if err := rt.MkdirAll(strings.TrimSuffix(dirName, "/"), 0o755); err != nil {
			return err
		}
	}
	if strings.HasPrefix(base, ".wh.") {
		// A whiteout hides a lower layer's file (or, opaque, a directory's content).
		if base == ".wh..wh..opq" {
			return clearDir(rt, strings.TrimSuffix(dirName, "/"))
		}
		return rt.RemoveAll(path.Join(dirName, strings.TrimPrefix(base, ".wh.")))
	}
	mode := fs.FileMode(h.Mode) & fs.ModePerm
	switch h.Typeflag {
	case tar.TypeDir:
		if err := rt.MkdirAll(name, mode); err != nil {
			return err
		}
		return rt.Chmod(name, mode)
	case tar.TypeReg:
		_ = rt.RemoveAll(name)
		f, err := rt.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_EXCL, mode)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, r); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	case tar.TypeSymlink:
		_ = rt.RemoveAll(name)
		return rt.Symlink(h.Linkname, name)
	case tar.TypeLink:
		_ = rt.RemoveAll(name)
		return rt.Link(path.Clean("/" + h.Linkname)[1:], name)
	}
	return fmt.Errorf("tar entry type %q is not supported", h.Typeflag)
}

func clearDir(rt *os.Root, dir string) error {
	if dir == "" {
		dir = "."
	}
	f, err := rt.Open(dir)
	if err != nil {
		return nil
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := rt.RemoveAll(path.Join(dir, n)); err != nil {
			return err
		}
	}
	return nil
}

// Table maps image references to loaded images; the lab writes it and
// every lab node reads it when it starts a container.
type Table map[string]*Image

// LoadTable reads a table file; a missing file is an empty table.
func LoadTable(p string) (Table, error) {
	t := Table{}
	if p == "" {
		return t, nil
	}
	err := readJSON(p, &t)
	if errors.Is(err, fs.ErrNotExist) {
		return t, nil
	}
	return t, err
}

// Add records ref in the table file at p (written whole, then renamed).
func Add(p, ref string, img *Image) error {
	t, err := LoadTable(p)
	if err != nil {
		return err
	}
	t[ref] = img
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
