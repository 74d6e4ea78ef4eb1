// Command gen writes the conformance suite's manifests, as the
// network-policy-api module embeds them, into ./base for the runner to embed.
// One change: the lab kernel has no SCTP sockets, so the containers that serve
// SCTP (agnhost porter with SERVE_SCTP_PORT_*) would crash and keep every
// StatefulSet from being Ready; they are left out. The SCTP probes then fail
// as they would on any node without SCTP, and the report says so.
package main

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/network-policy-api/conformance"
	"sigs.k8s.io/yaml"
)

func main() {
	if err := run("."); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	if err := os.RemoveAll(filepath.Join(out, "base")); err != nil {
		return err
	}
	return fs.WalkDir(conformance.Manifests, "base", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := conformance.Manifests.ReadFile(path)
		if err != nil {
			return err
		}
		if path == "base/manifests.yaml" {
			if data, err = withoutSCTPServers(data); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
		dst := filepath.Join(out, path)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
}

// HostPortStart is the first of the eight host-network ports the suite
// templates into its manifests; the runner passes the same range.
const HostPortStart = 34345

// withoutSCTPServers drops every container that serves SCTP. The manifest is a
// Go template (host ports): it is rendered first, as the suite would, so that
// it parses as YAML; rendering it again in the suite changes nothing.
func withoutSCTPServers(data []byte) ([]byte, error) {
	tmpl, err := template.New("base").Parse(string(data))
	if err != nil {
		return nil, err
	}
	var rendered bytes.Buffer
	ports := make([]int, 8)
	for i := range ports {
		ports[i] = HostPortStart + i
	}
	if err := tmpl.Execute(&rendered, struct{ HostNetworkPorts []int }{ports}); err != nil {
		return nil, err
	}
	dec := k8syaml.NewYAMLOrJSONDecoder(&rendered, 4096)
	var out bytes.Buffer
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); err == io.EOF {
			break
		} else if err != nil {
			return nil, err
		}
		if len(obj.Object) == 0 {
			continue
		}
		containers, found, err := unstructured.NestedSlice(obj.Object, "spec", "template", "spec", "containers")
		if err != nil {
			return nil, err
		}
		if found {
			kept := containers[:0]
			for _, c := range containers {
				if !servesSCTP(c) {
					kept = append(kept, c)
				}
			}
			if err := unstructured.SetNestedSlice(obj.Object, kept, "spec", "template", "spec", "containers"); err != nil {
				return nil, err
			}
		}
		doc, err := yaml.Marshal(obj.Object)
		if err != nil {
			return nil, err
		}
		out.WriteString("---\n")
		out.Write(doc)
	}
	return out.Bytes(), nil
}

func servesSCTP(c any) bool {
	m, _ := c.(map[string]any)
	env, _, _ := unstructured.NestedSlice(m, "env")
	for _, e := range env {
		if em, ok := e.(map[string]any); ok {
			if name, _ := em["name"].(string); strings.HasPrefix(name, "SERVE_SCTP_PORT_") {
				return true
			}
		}
	}
	return false
}
