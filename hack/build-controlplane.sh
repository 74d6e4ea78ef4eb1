#!/usr/bin/env bash
# Builds the binaries the lab and the tests run, from lab/k8s (pinned
# k8s.io/kubernetes) into a per-version cache, only those missing:
#   lab:  etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#         kubectl: what `weft lab up` and `make demo` need;
#   all:  those, plus kube-proxy (the benchmarks' baseline), agnhost (the
#         upstream e2e test image's program, run for agnhost images;
#         CoreDNS from lab/coredns as its /coredns), regression-issue-74839
#         (the test image of the upstream invalid-conntrack-state spec) and
#         e2e-network.test (the upstream e2e suite cut to the network specs,
#         lab/k8s/e2enetwork): what `make test` and `make bench` need.
# A cold build takes several minutes; progress is printed as packages compile.
set -euo pipefail
version=$1 out=$2 set=${3:-all}
declare -A pkg=(
  [etcd]=./cmd/etcd
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
  [kubectl]=k8s.io/kubernetes/cmd/kubectl
  [kube-proxy]=k8s.io/kubernetes/cmd/kube-proxy
  [agnhost]=k8s.io/kubernetes/test/images/agnhost
  [regression-issue-74839]=k8s.io/kubernetes/test/images/regression-issue-74839
)
bins=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)
if [[ $set == all ]]; then
  bins+=(kube-proxy agnhost regression-issue-74839 e2e-network.test agnhost-localhost.crt agnhost-localhost.key coredns)
fi
# What the binaries are built from: a change to the pinned modules, to
# CoreDNS's or to this script builds every binary again.
here=$(cd "$(dirname "$0")/.." && pwd)
stamp=$(cat "$here/hack/build-controlplane.sh" "$here"/lab/k8s/go.{mod,sum} "$here"/lab/coredns/go.{mod,sum} | sha256sum | cut -c1-16)
if [[ -d $out && $(cat "$out/.built-from" 2>/dev/null) != "$stamp" ]]; then
  echo "control plane in $out was built from other sources: building it again"
  rm -rf "$out"
fi
missing=()
for b in "${bins[@]}"; do [[ -e $out/$b ]] || missing+=("$b"); done
if ((${#missing[@]} == 0)); then
  echo "control plane $version ($set): cached in $out"
  exit 0
fi
want() { [[ " ${missing[*]} " == *" $1 "* ]]; }
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
cd "$(dirname "$0")/../lab/k8s"
echo "building ${missing[*]} ($version) into $out (first time: several minutes)"
start=$(date +%s)
# weft's own build flags (Makefile), with lab/k8s pinned to weft's versions of
# the modules both use (TestLabModuleSharesWeftVersions): the Go build cache
# then compiles client-go, k8s.io/api and the rest once for both.
export CGO_ENABLED=0
flags=(-trimpath -tags grpcnotrace)
# The version `kubectl version` and the API server's /version report.
minor=${version#v1.}; minor=${minor%%.*}
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
pkgs=()
for b in "${missing[@]}"; do [[ -n ${pkg[$b]:-} ]] && pkgs+=("${pkg[$b]}"); done
if ((${#pkgs[@]} > 0)); then
  n=0
  # No symbol tables or DWARF: nothing debugs these, and linking is faster.
  go build -v "${flags[@]}" -ldflags "$ldflags" -o "$out.tmp/" "${pkgs[@]}" 2>&1 | while read -r line; do
    n=$((n + 1))
    if ((n % 100 == 0)); then echo "  ... $n packages compiled ($(( $(date +%s) - start ))s)"; fi
    case $line in *error*|*cannot*|*undefined*) echo "$line";; esac
  done
fi
# Files the agnhost image carries besides the binary (porter's TLS pair).
if want agnhost-localhost.crt || want agnhost-localhost.key; then
  k8s_dir=$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)
  for f in localhost.crt localhost.key; do
    cp "$k8s_dir/test/images/agnhost/porter/$f" "$out.tmp/agnhost-$f"
  done
fi
if want e2e-network.test; then
  echo "  building the upstream network e2e suite"
  go test -c "${flags[@]}" -ldflags "$ldflags" -o "$out.tmp/e2e-network.test" ./e2enetwork
fi
# CoreDNS (own module): the DNS benchmark's baseline, and the agnhost image's
# /coredns that upstream DNS specs run as a test server.
if want coredns; then
  echo "  building CoreDNS"
  (cd ../coredns && go build -o "$out.tmp/coredns" .)
fi
for b in "${missing[@]}"; do [[ -e $out.tmp/$b ]] || { echo "build failed: $b missing" >&2; exit 1; }; done
mkdir -p "$out"
for b in "${missing[@]}"; do mv -f "$out.tmp/$b" "$out/$b"; done
echo "$stamp" > "$out/.built-from"
rm -rf "$out.tmp"
echo "built ${#missing[@]} binaries in $(( $(date +%s) - start ))s"
