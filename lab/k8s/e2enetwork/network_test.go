// Package e2enetwork is the upstream Kubernetes e2e suite cut down to the
// network tests (test/e2e/network and test/e2e/common/network). It is built
// with `go test -c` by hack/build-controlplane.sh and run against the lab by
// `make e2e-upstream` (hack/e2e-upstream.sh).
//
// The suite set-up (wait for schedulable nodes and ready kube-system pods, the
// Ginkgo config from framework flags) is the upstream package
// k8s.io/kubernetes/test/e2e itself, so the specs run exactly as they do in
// upstream CI; only the set of imported specs differs.
package e2enetwork

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"k8s.io/component-base/version"
	conformancetestdata "k8s.io/kubernetes/test/conformance/testdata"
	"k8s.io/kubernetes/test/e2e"
	"k8s.io/kubernetes/test/e2e/framework"
	"k8s.io/kubernetes/test/e2e/framework/config"
	"k8s.io/kubernetes/test/e2e/framework/testfiles"
	e2etestingmanifests "k8s.io/kubernetes/test/e2e/testing-manifests"
	testfixtures "k8s.io/kubernetes/test/fixtures"

	// Feature and label constants must be defined before specs register.
	_ "k8s.io/kubernetes/test/e2e/feature"

	// The specs: everything [sig-network].
	_ "k8s.io/kubernetes/test/e2e/common/network"
	_ "k8s.io/kubernetes/test/e2e/network"

	// Framework extensions the full suite also loads.
	_ "k8s.io/kubernetes/test/e2e/framework/debug/init"
	_ "k8s.io/kubernetes/test/e2e/framework/metrics/init"
	_ "k8s.io/kubernetes/test/e2e/framework/node/init"
)

func TestMain(m *testing.M) {
	showVersion := flag.Bool("version", false, "print the Kubernetes version the suite was built from")
	config.CopyFlags(config.Flags, flag.CommandLine)
	framework.RegisterCommonFlags(flag.CommandLine)
	framework.RegisterClusterFlags(flag.CommandLine)
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Get())
		os.Exit(0)
	}
	// Manifests and fixtures some specs read come embedded in the binary.
	testfiles.AddFileSource(e2etestingmanifests.GetE2ETestingManifestsFS())
	testfiles.AddFileSource(testfixtures.GetTestFixturesFS())
	testfiles.AddFileSource(conformancetestdata.GetConformanceTestdataFS())
	framework.AfterReadingAllFlags(&framework.TestContext)
	os.Exit(m.Run())
}

func TestNetworkE2E(t *testing.T) {
	e2e.RunE2ETests(t)
}
