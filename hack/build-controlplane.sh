#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
# kubectl, kube-proxy (the benchmarks' baseline), agnhost (the upstream e2e
# test image's program, run for agnhost images; CoreDNS from lab/coredns as
# its /coredns), regression-issue-74839 (the test image of the upstream
# invalid-conntrack-state spec) and e2e-network.test (the upstream e2e suite
# cut to the network specs, lab/k8s/e2enetwork), from lab/k8s (pinned
# k8s.io/kubernetes) into a per-version cache.
# A cold build takes several minutes; progress is printed as packages compile.
set -euo pipefail
version=$1 out=$2
bins=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kube-proxy agnhost regression-issue-74839 e2e-network.test agnhost-localhost.crt agnhost-localhost.key coredns)
missing=0
for b in "${bins[@]}"; do [[ -e $out/$b ]] || missing=1; done
if ((missing == 0)); then
  echo "control plane $version: cached in $out"
  exit 0
fi
mkdir -p "$out.tmp"
cd "$(dirname "$0")/../lab/k8s"
echo "building control plane $version into $out (first time: several minutes)"
start=$(date +%s)
n=0
go build -v -o "$out.tmp/" ./cmd/etcd k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kube-proxy \
  k8s.io/kubernetes/test/images/agnhost k8s.io/kubernetes/test/images/regression-issue-74839 2>&1 | while read -r line; do
    n=$((n + 1))
    if ((n % 100 == 0)); then echo "  ... $n packages compiled ($(( $(date +%s) - start ))s)"; fi
    case $line in *error*|*cannot*|*undefined*) echo "$line";; esac
  done
# Files the agnhost image carries besides the binary (porter's TLS pair).
k8s_dir=$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)
for f in localhost.crt localhost.key; do
  cp "$k8s_dir/test/images/agnhost/porter/$f" "$out.tmp/agnhost-$f"
done
echo "  building the upstream network e2e suite"
go test -c -o "$out.tmp/e2e-network.test" ./e2enetwork
# CoreDNS (own module): the DNS benchmark's baseline, and the agnhost image's
# /coredns that upstream DNS specs run as a test server.
echo "  building CoreDNS"
(cd ../coredns && go build -o "$out.tmp/coredns" .)
for b in "${bins[@]}"; do [[ -e $out.tmp/$b ]] || { echo "build failed: $b missing" >&2; exit 1; }; done
rm -rf "$out" && mv "$out.tmp" "$out"
echo "control plane built in $(( $(date +%s) - start ))s"
