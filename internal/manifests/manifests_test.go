package manifests

import (
	"sigs.k8s.io/yaml"

	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"

	"weft.dev/weft/internal/ingress/controller"
	"weft.dev/weft/internal/netpol"
)

// deploy/weft.yaml is the generator's output for the defaults, byte for
// byte: an edit by hand fails here.
func TestDeployYAMLIsGenerated(t *testing.T) {
	want, err := Render(Defaults())
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../deploy/weft.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("deploy/weft.yaml differs from `weft manifests`: regenerate it with `make manifests`, never edit it by hand")
	}
}

// Every document decodes as the Kubernetes type it says it is.
func TestEveryDocumentDecodes(t *testing.T) {
	c := Defaults()
	c.LBPool = "198.19.100.0/24"
	out, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(out), "\n---\n")[1:]
	if len(docs) < 12 {
		t.Fatalf("%d documents", len(docs))
	}
	for _, d := range docs {
		if strings.Contains(d, "\nkind: CustomResourceDefinition\n") {
			checkCRD(t, d)
			continue
		}
		if _, gvk, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(d), nil, nil); err != nil {
			t.Errorf("%v: %v\n%s", gvk, err, d)
		}
	}
}

// Only the ingress controller may read Secrets (and write nothing but
// statuses, Events and the Gateways' Services and EndpointSlices); only
// the agent may touch Nodes.
func TestLeastPrivilege(t *testing.T) {
	c := Defaults()
	c.LBPool = "198.19.100.0/24"
	objs, err := Objects(c)
	if err != nil {
		t.Fatal(err)
	}
	roles := 0
	for _, o := range objs {
		r, ok := o.(*rbacv1.ClusterRole)
		if !ok {
			continue
		}
		roles++
		for _, rule := range r.Rules {
			if (slices.Contains(rule.Resources, "secrets") && r.Name != "weft:ingress") || slices.Contains(rule.Resources, "*") || slices.Contains(rule.Verbs, "*") {
				t.Errorf("%s: %v", r.Name, rule)
			}
			if slices.Contains(rule.Resources, "secrets") && slices.ContainsFunc(rule.Verbs, func(v string) bool { return v != "get" && v != "list" && v != "watch" }) {
				t.Errorf("%s may write secrets: %v", r.Name, rule)
			}
			writes := slices.ContainsFunc(rule.Verbs, func(v string) bool { return v != "get" && v != "list" && v != "watch" })
			if writes && slices.Contains(rule.Resources, "nodes") && r.Name != "weft:agent" {
				t.Errorf("%s may write nodes", r.Name)
			}
			makes := slices.ContainsFunc(rule.Verbs, func(v string) bool { return v == "create" || v == "update" || v == "delete" })
			if makes && (slices.Contains(rule.Resources, "services") || slices.Contains(rule.Resources, "endpointslices")) && r.Name != "weft:ingress" {
				t.Errorf("%s may write %v", r.Name, rule.Resources)
			}
		}
	}
	if roles != 4 {
		t.Errorf("%d cluster roles, want one per component (4)", roles)
	}
}

// The agents may hold the Lease netpol's status writer uses, and no other.
func TestAgentsHoldOnlyTheStatusLease(t *testing.T) {
	objs, err := Objects(Defaults())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if r, ok := o.(*rbacv1.Role); ok && r.Name == AgentName+"-status-lease" {
			for _, rule := range r.Rules {
				if slices.Contains(rule.Verbs, "update") && !slices.Equal(rule.ResourceNames, []string{netpol.StatusLease}) {
					t.Errorf("agents may update leases %v, want only %s", rule.ResourceNames, netpol.StatusLease)
				}
			}
			return
		}
	}
	t.Fatal("no Role for the status Lease")
}

func TestValidateRefusesBrokenConfigs(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"cidr":    func(c *Config) { c.ClusterCIDRs = []string{"10.244.0.0"} },
		"dns":     func(c *Config) { c.ClusterDNS = "kube-dns" },
		"local":   func(c *Config) { c.NodeLocalDNS = "10.0.0.10" },
		"backend": func(c *Config) { c.Backend = "wireguard" },
		"pool":    func(c *Config) { c.LBPool = "x" },
		"image":   func(c *Config) { c.Image = "" },
	} {
		c := Defaults()
		mod(&c)
		if _, err := Render(c); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// --ingress-nginx-class: IngressClass nginx with weft's controller, which
// the ingress controller then serves (ingress-nginx's Ingresses as they
// are); without it, no such class.
func TestIngressNginxClass(t *testing.T) {
	nginxClass := func(c Config) *networkingv1.IngressClass {
		objs, err := Objects(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if ic, ok := o.(*networkingv1.IngressClass); ok && ic.Name == "nginx" {
				return ic
			}
		}
		return nil
	}
	c := Defaults()
	if nginxClass(c) != nil {
		t.Error("class nginx without the option")
	}
	c.IngressNginxClass = true
	ic := nginxClass(c)
	if ic == nil || ic.Spec.Controller != controller.ControllerName {
		t.Fatalf("class nginx: %+v", ic)
	}
	ing := &networkingv1.Ingress{Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("nginx")}}
	if got := controller.Ours([]*networkingv1.Ingress{ing}, []*networkingv1.IngressClass{ic}); len(got) != 1 {
		t.Error("weft ingress does not serve an Ingress of class nginx")
	}
}

// checkCRD: client-go's scheme has no CRD type; the document must still
// be a complete v1 CRD whose name is its plural and group, with a schema.
func checkCRD(t *testing.T, doc string) {
	t.Helper()
	var crd struct {
		APIVersion string `json:"apiVersion"`
		Metadata   struct{ Name string }
		Spec       struct {
			Group    string
			Names    struct{ Plural, Kind string }
			Versions []struct {
				Name   string
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				}
			}
		}
	}
	if err := yaml.Unmarshal([]byte(doc), &crd); err != nil {
		t.Fatalf("CRD: %v\n%s", err, doc)
	}
	if crd.APIVersion != "apiextensions.k8s.io/v1" || crd.Metadata.Name != crd.Spec.Names.Plural+"."+crd.Spec.Group || crd.Spec.Names.Kind == "" ||
		len(crd.Spec.Versions) == 0 || crd.Spec.Versions[0].Schema.OpenAPIV3Schema["type"] != "object" {
		t.Errorf("incomplete CRD %s:\n%s", crd.Metadata.Name, doc)
	}
}

// The ClusterNetworkPolicy CRD shipped is the one of the module version
// go.mod names, unchanged.
func TestUpstreamCRDsAreTheModules(t *testing.T) {
	cases := []struct{ module, dir, file, ours string }{
		{"sigs.k8s.io/network-policy-api", "config/crd/experimental", "policy.networking.k8s.io_clusternetworkpolicies.yaml", "crds"},
	}
	for _, ch := range []string{"standard", "experimental"} {
		for _, r := range []string{"gatewayclasses", "gateways", "httproutes", "grpcroutes", "tlsroutes", "referencegrants", "backendtlspolicies", "listenersets"} {
			cases = append(cases, struct{ module, dir, file, ours string }{
				"sigs.k8s.io/gateway-api", "config/crd/" + ch, "gateway.networking.k8s.io_" + r + ".yaml", "crds/gateway/" + ch})
		}
	}
	for _, c := range cases {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", c.module).Output()
		if err != nil {
			t.Fatalf("go list: %v", err)
		}
		want, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), c.dir, c.file))
		if err != nil {
			t.Fatal(err)
		}
		got, err := crdFiles.ReadFile(c.ours + "/" + c.file)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s/%s is not the module's (%v): run make crds", c.ours, c.file, err)
		}
	}
}

// The configuration's channel picks the Gateway API CRDs: only the
// experimental HTTPRoute has retries.
func TestGatewayChannelPicksTheCRDs(t *testing.T) {
	for ch, wantRetry := range map[string]bool{"standard": false, "experimental": true} {
		c := Defaults()
		c.GatewayChannel = ch
		out, err := Render(c)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(out, []byte("gateway.networking.k8s.io/channel: "+ch)); !got {
			t.Errorf("%s: no CRD of that channel", ch)
		}
		if got := bytes.Contains(out, []byte("retry:")); got != wantRetry {
			t.Errorf("%s: HTTPRoute retry field present %v, want %v", ch, got, wantRetry)
		}
	}
	c := Defaults()
	c.GatewayChannel = "beta"
	if _, err := Render(c); err == nil {
		t.Error("channel beta accepted")
	}
}
