# weft: see README.md. Every target installs what it needs (run as root).
SHELL := /bin/bash
export GOFLAGS ?= -mod=mod
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X weft.dev/weft/internal/version.Version=$(VERSION)
# grpcnotrace: gRPC (the lab's CRI types, testserver) would link
# golang.org/x/net/trace and with it html/template, whose reflective method
# calls keep every method of every type: 67 MB instead of 39 MB.
BUILD_TAGS := grpcnotrace
K8S_VERSION := v1.37.2
export CACHE_DIR ?= /var/cache/weft-lab
export CP_DIR := $(CACHE_DIR)/k8s-$(K8S_VERSION)

.PHONY: bpf gateway-conformance all build lab-image lab-image-next deps controlplane testbins demo test test-unit test-privileged test-e2e churn e2e-frr e2e-upstream e2e-doc e2e-lb-doc cnp-conformance bench clean lab-down manifests crds image

all: build

deps:
	@hack/install-deps.sh

# Built as the image's binaries are (static, trimmed), so the lab's image
# packs exactly these.
build:
	CGO_ENABLED=0 go build -tags $(BUILD_TAGS) -trimpath -ldflags "-s -w $(LDFLAGS)" -o bin/ ./cmd/weft ./cmd/weft-cni ./cmd/weft-dns

# The image the lab installs weft from: this machine's architecture, from bin/.
lab-image: build
	@ARCHS=$$(go env GOARCH) OUT=_output/lab-image FROM_BIN=bin hack/image.sh

# A second build (another version string) the rolling-upgrade test moves to.
lab-image-next: build
	CGO_ENABLED=0 go build -tags $(BUILD_TAGS) -trimpath -ldflags "-s -w $(LDFLAGS)-next" -o _output/next-bin/ ./cmd/weft ./cmd/weft-cni ./cmd/weft-dns
	@ARCHS=$$(go env GOARCH) OUT=_output/lab-image-next FROM_BIN=_output/next-bin hack/image.sh

# The real Kubernetes control plane, built once per version and cached:
# what the lab needs (make demo).
controlplane:
	@hack/build-controlplane.sh $(K8S_VERSION) $(CP_DIR) lab

# The control plane plus what the tests and benchmarks run beside it
# (kube-proxy, agnhost, CoreDNS, the upstream e2e suite), cached alike.
testbins:
	@hack/build-controlplane.sh $(K8S_VERSION) $(CP_DIR) all

demo: deps build lab-image controlplane
	@hack/demo.sh

test: deps build lab-image lab-image-next testbins
	@hack/test.sh

test-unit:
	go test ./...

# bpf rebuilds the fast path's tc programs (needs clang and libbpf-dev);
# the object is committed, so building weft needs neither.
bpf:
	cd internal/fastpath && go generate ./...

test-privileged: build
	WEFT_REQUIRE_PRIVILEGED=1 go test -count=1 -run 'Privileged' ./...

test-e2e: build lab-image lab-image-next testbins
	go test -count=1 -tags e2e -timeout 30m -v ./test/e2e/...

# The CNI churn test at full size: 1,000 pods created and deleted while
# weft-cni and the agents are killed (make test runs 200).
churn: build lab-image testbins
	WEFT_CHURN_PODS=1000 go test -count=1 -tags e2e -timeout 40m -v -run TestCNIChurnWithKills ./test/e2e/

# The BGP lab test against FRR (make test runs it against BIRD).
e2e-frr: build lab-image testbins
	WEFT_BGP_ROUTERS=frr go test -count=1 -tags e2e -timeout 30m -v -run TestCrossNodeBGP ./test/e2e/

# The upstream [sig-network] e2e suite against the lab: FOCUS=regex SKIP=regex.
e2e-upstream: deps build lab-image testbins
	@FOCUS='$(FOCUS)' SKIP='$(SKIP)' hack/e2e-upstream.sh

# The [Feature:LoadBalancer] specs on a bgp lab from the outside namespace;
# writes docs/e2e-loadbalancer.md.
e2e-lb-doc: deps build lab-image testbins
	@BACKEND=bgp FROM=outside OUT=_output/e2e-upstream-lb FOCUS='\[Feature:LoadBalancer\]' SKIP='\[Disruptive\]|switch session affinity for LoadBalancer service with Local' hack/e2e-upstream.sh || true
	DOC_TARGET="make e2e-lb-doc" go run ./test/upstream doc _output/e2e-upstream-lb/junit.xml > docs/e2e-loadbalancer.md

# The whole ClusterNetworkPolicy conformance suite against a lab; writes
# docs/conformance/ (make test runs the tests that check a behaviour once).
cnp-conformance: deps build lab-image testbins
	DOC=1 hack/cnp-conformance.sh

# Runs the whole default [sig-network] set and regenerates docs/e2e.md from it.
# Six workers in three racks (zones): the Traffic Distribution specs need at
# least two schedulable nodes in each of three zones.
e2e-doc: deps build lab-image testbins
	@NODES=6 hack/e2e-upstream.sh || true
	@DUAL_STACK=1 OUT=_output/e2e-upstream-dual FOCUS='\[Feature:IPv6DualStack\]' SKIP='\[Disruptive\]|\[Feature:SCTPConnectivity\]' hack/e2e-upstream.sh || true
	@BACKEND=bgp FROM=outside OUT=_output/e2e-upstream-lb FOCUS='\[Feature:LoadBalancer\]' SKIP='\[Disruptive\]|switch session affinity for LoadBalancer service with Local' hack/e2e-upstream.sh || true
	go run ./test/upstream doc _output/e2e-upstream/junit.xml _output/e2e-upstream-dual/junit.xml _output/e2e-upstream-lb/junit.xml > docs/e2e.md

# weft's image for amd64 and arm64 as an OCI layout and tarball (no Docker).
image:
	@hack/image.sh

# deploy/weft.yaml: the manifests for the defaults (a unit test keeps it so).
manifests: crds
	go run ./cmd/weft manifests > deploy/weft.yaml

# The upstream APIs' CustomResourceDefinitions weft serves, as their
# modules ship them (the version go.mod names), embedded in the manifests.
GATEWAY_CRDS := gatewayclasses gateways httproutes grpcroutes tlsroutes referencegrants backendtlspolicies listenersets
crds:
	install -m 644 "$$(go list -m -f '{{.Dir}}' sigs.k8s.io/network-policy-api)/config/crd/experimental/policy.networking.k8s.io_clusternetworkpolicies.yaml" internal/manifests/crds/
	for ch in standard experimental; do for r in $(GATEWAY_CRDS); do \
		install -m 644 "$$(go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)/config/crd/$$ch/gateway.networking.k8s.io_$$r.yaml" internal/manifests/crds/gateway/$$ch/ || exit 1; \
	done; done

# The Gateway API conformance suite (v1.6.3) against its own lab; the
# report goes to docs/conformance/gateway/ (RUN_TEST=name for one test).
gateway-conformance: deps build lab-image testbins
	@DOC=1 hack/gateway-conformance.sh

bench: deps build lab-image testbins
	@hack/bench.sh

lab-down:
	-bin/weft lab down

clean: lab-down
	rm -rf bin _output
