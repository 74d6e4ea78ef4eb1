package manifests

import (
	"bytes"
	"embed"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// The CustomResourceDefinitions weft serves: its own APIs (bgp.weft.dev),
// shipped whatever the backend so that a cluster can switch to bgp,
// sigs.k8s.io/network-policy-api's ClusterNetworkPolicy (experimental
// channel), and the Gateway API resources weft serves in the channel the
// configuration names (the experimental one adds fields such as HTTPRoute
// retries), as their modules ship them (make crds takes them from the
// versions in go.mod).
//
//go:embed crds/*.yaml crds/gateway/standard/*.yaml crds/gateway/experimental/*.yaml
var crdFiles embed.FS

func crds(gatewayChannel string) ([]runtime.Object, error) {
	var out []runtime.Object
	for _, dir := range []string{"crds", "crds/gateway/" + gatewayChannel} {
		objs, err := crdsIn(dir)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

func crdsIn(dir string) ([]runtime.Object, error) {
	entries, err := crdFiles.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []runtime.Object
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := crdFiles.ReadFile(dir + "/" + e.Name())
		if err != nil {
			return nil, err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); err == io.EOF {
				break
			} else if err != nil {
				return nil, fmt.Errorf("%s: %w", e.Name(), err)
			}
			if len(u.Object) > 0 {
				out = append(out, u)
			}
		}
	}
	return out, nil
}

// IsCRD reports whether o is a CustomResourceDefinition.
func IsCRD(o runtime.Object) bool {
	u, ok := o.(*unstructured.Unstructured)
	return ok && u.GetKind() == "CustomResourceDefinition"
}
