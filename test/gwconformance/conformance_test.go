// Package gwconformance runs the Gateway API conformance suite of
// sigs.k8s.io/gateway-api v1.6.3 against a cluster running weft ingress
// (hack/gateway-conformance.sh brings up the lab and passes the flags:
// the suite's own, --gateway-class, --conformance-profiles,
// --supported-features, --report-output, ...).
package gwconformance

import (
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"sigs.k8s.io/gateway-api/conformance"
)

func TestGatewayAPIConformance(t *testing.T) {
	opts := conformance.DefaultOptions(t)
	m, err := labManifests()
	if err != nil {
		t.Fatal(err)
	}
	opts.ManifestFS = []fs.FS{m}
	conformance.RunConformanceWithOptions(t, opts)
}

// The base manifests' CoreDNS (a UDPRoute backend) forwards to public
// resolvers and uses a plugin the lab's CoreDNS build lacks; the lab may
// send nothing outside its namespaces, and no UDPRoute test runs here:
// it gets a Corefile that answers nothing, so that its pod starts.
const (
	suiteCorefile = "    .:53 {\n        forward . 8.8.8.8 9.9.9.9\n        log\n        errors\n    }\n    foo.bar.com:53 {\n      whoami\n    }\n"
	labCorefile   = "    .:53 {\n        errors\n    }\n"
)

// labManifests is the suite's manifests with the lab's Corefile.
func labManifests() (fs.FS, error) {
	out := fstest.MapFS{}
	err := fs.WalkDir(&conformance.Manifests, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(&conformance.Manifests, path)
		if err != nil {
			return err
		}
		if path == "base/manifests.yaml" {
			s := string(b)
			if !strings.Contains(s, suiteCorefile) {
				return fs.ErrNotExist // the suite changed: look again
			}
			b = []byte(strings.Replace(s, suiteCorefile, labCorefile, 1))
		}
		out[path] = &fstest.MapFile{Data: b}
		return nil
	})
	return out, err
}
