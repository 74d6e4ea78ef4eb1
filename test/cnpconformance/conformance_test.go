// Package cnpconformance runs the network-policy-api conformance suite of the
// module version in go.mod against a running cluster (the weft lab), with all
// ClusterNetworkPolicy features, and writes the suite's report.
//
// Run it through `make cnp-conformance` (all tests, report to docs/) or
// hack/test.sh (the CI set); both generate ./base first (see gen/).
package cnpconformance

import (
	"context"
	"embed"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	api "sigs.k8s.io/network-policy-api/apis/v1beta1"
	confv1a1 "sigs.k8s.io/network-policy-api/conformance/apis/v1alpha1"
	"sigs.k8s.io/network-policy-api/conformance/tests"
	"sigs.k8s.io/network-policy-api/conformance/utils/suite"
	"sigs.k8s.io/yaml"
)

//go:embed base
var manifests embed.FS

var (
	kubeconfig = flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "the lab's kubeconfig")
	only       = flag.String("only", "", "comma-separated test short names to run (default: all)")
	report     = flag.String("report", "", "file to write the conformance report to")
	version    = flag.String("weft-version", "dev", "weft version for the report")
)

const hostPortStart = 34345 // as gen renders base/manifests.yaml

func TestClusterNetworkPolicyConformance(t *testing.T) {
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		t.Fatalf("kubeconfig %q: %v", *kubeconfig, err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := api.Install(c.Scheme()); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(c.Scheme()); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := suite.NewConformanceProfileTestSuite(suite.ConformanceProfileOptions{
		Options: suite.Options{
			Client:                     c,
			ClientSet:                  cs,
			KubeConfig:                 *cfg,
			CleanupBaseResources:       true,
			EnableAllSupportedFeatures: true,
			HostNetworkPortRangeStart:  hostPortStart,
			HostNetworkPortRangeEnd:    hostPortStart + 7,
			FS:                         &manifests,
		},
		Implementation: confv1a1.Implementation{
			Organization: "weft",
			Project:      "weft",
			URL:          "https://weft.dev",
			Version:      *version,
			Contact:      []string{"weft maintainers"},
		},
		ConformanceProfiles: sets.New(suite.CNPConformanceProfileName),
	})
	if err != nil {
		t.Fatal(err)
	}
	waitForOldNamespaces(t, cs)
	s.Setup(t)
	if err := s.Run(t, selected(t)); err != nil {
		t.Fatal(err)
	}
	r, err := s.Report()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := yaml.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("conformance report:\n%s", raw)
	if *report != "" {
		if err := os.WriteFile(*report, raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// selected returns the suite's tests, or those named by -only; a name that
// matches no test fails the run rather than silently running nothing.
func selected(t *testing.T) []suite.ConformanceTest {
	if *only == "" {
		return tests.ConformanceTests
	}
	want := sets.New(strings.Split(*only, ",")...)
	var out []suite.ConformanceTest
	for _, ct := range tests.ConformanceTests {
		if want.Has(ct.ShortName) {
			out = append(out, ct)
			want.Delete(ct.ShortName)
		}
	}
	if want.Len() > 0 {
		t.Fatalf("no such conformance tests: %v", sets.List(want))
	}
	return out
}

// waitForOldNamespaces deletes the suite's namespaces left by an earlier run
// (they are deleted at the end of a run, which does not wait) and waits until
// they are gone: the suite cannot create its pods in a terminating namespace.
func waitForOldNamespaces(t *testing.T, cs kubernetes.Interface) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		left := 0
		for _, ns := range nss.Items {
			if strings.HasPrefix(ns.Name, "network-policy-conformance-") {
				left++
				if ns.DeletionTimestamp == nil {
					_ = cs.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{})
				}
			}
		}
		return left == 0, nil
	})
	if err != nil {
		t.Fatalf("namespaces of an earlier run are still there: %v", err)
	}
}
