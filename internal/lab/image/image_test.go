package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

type entry struct {
	name, body, link string
	typ              byte
}

// layout writes an OCI layout with one image of the given layers.
func layout(t *testing.T, layers ...[]entry) string {
	t.Helper()
	dir := t.TempDir()
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(b []byte) string {
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(blobs, h), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return "sha256:" + h
	}
	var ls []map[string]any
	for _, es := range layers {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		for _, e := range es {
			h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o755, Linkname: e.link, Size: int64(len(e.body))}
			if e.typ != tar.TypeReg {
				h.Size = 0
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if e.typ == tar.TypeReg {
				tw.Write([]byte(e.body))
			}
		}
		tw.Close()
		zw.Close()
		ls = append(ls, map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(buf.Bytes())})
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": runtime.GOARCH, "config": map[string]any{"Entrypoint": []string{"/bin/app"}, "Env": []string{"PATH=/bin"}}})
	man, _ := json.Marshal(map[string]any{"config": map[string]any{"digest": put(cfg)}, "layers": ls})
	idx, _ := json.Marshal(map[string]any{"manifests": []map[string]any{
		{"mediaType": manifestType, "digest": put(man), "platform": map[string]string{"os": "linux", "architecture": "not-" + runtime.GOARCH}},
		{"mediaType": manifestType, "digest": put(man), "platform": map[string]string{"os": "linux", "architecture": runtime.GOARCH}},
	}})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestUnpackAppliesLayersInOrder(t *testing.T) {
	dir := layout(t,
		[]entry{{name: "bin/", typ: tar.TypeDir}, {name: "bin/app", body: "v1", typ: tar.TypeReg}, {name: "etc/old", body: "x", typ: tar.TypeReg}},
		[]entry{{name: "bin/app", body: "v2", typ: tar.TypeReg}, {name: "etc/.wh.old", typ: tar.TypeReg}, {name: "sbin", link: "bin", typ: tar.TypeSymlink}})
	img, err := Unpack(dir, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(img.Root, "sbin", "app")); err != nil || string(b) != "v2" {
		t.Fatalf("sbin/app = %q, %v; want the upper layer's v2 through the symlink", b, err)
	}
	if _, err := os.Stat(filepath.Join(img.Root, "etc", "old")); !os.IsNotExist(err) {
		t.Fatalf("whiteout did not remove etc/old: %v", err)
	}
	if len(img.Entrypoint) != 1 || img.Entrypoint[0] != "/bin/app" || img.Env[0] != "PATH=/bin" {
		t.Fatalf("run defaults %+v", img)
	}
}

func TestUnpackStaysInsideItsRoot(t *testing.T) {
	outside := t.TempDir()
	dir := layout(t, []entry{
		{name: "../../escape", body: "x", typ: tar.TypeReg},
		{name: "out", link: outside, typ: tar.TypeSymlink},
		{name: "out/planted", body: "x", typ: tar.TypeReg},
	})
	dest := t.TempDir()
	_, err := Unpack(dir, dest)
	if err == nil || !strings.Contains(err.Error(), "out/planted") {
		t.Fatalf("writing through a symlink out of the root: err %v, want refused", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "planted")); !os.IsNotExist(err) {
		t.Fatal("a layer wrote outside its root")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dest), "escape")); !os.IsNotExist(err) {
		t.Fatal("a ../ name wrote outside the root")
	}
}

func TestUnpackRefusesATamperedBlob(t *testing.T) {
	dir := layout(t, []entry{{name: "a", body: "x", typ: tar.TypeReg}})
	var idx index
	if err := readJSON(filepath.Join(dir, "index.json"), &idx); err != nil {
		t.Fatal(err)
	}
	var man manifest
	if err := readBlobJSON(dir, idx.Manifests[1].Digest, &man); err != nil {
		t.Fatal(err)
	}
	p, _ := blobPath(dir, man.Layers[0].Digest)
	if err := os.WriteFile(p, []byte("not the layer"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Unpack(dir, t.TempDir()); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("tampered layer: err %v, want a digest mismatch", err)
	}
}
