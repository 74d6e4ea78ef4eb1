#!/usr/bin/env bash
# The ClusterNetworkPolicy conformance suite (sigs.k8s.io/network-policy-api)
# against a lab of its own. ONLY: comma-separated test names (default all);
# DOC=1: write docs/conformance/ (README.md from the results, report.yaml
# from the suite) instead of failing on a failed test.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/_output/cnp-conformance
mkdir -p "$out"
bin/weft lab down >/dev/null 2>&1 || true
bin/weft lab up --nodes 2
trap 'bin/weft lab down >/dev/null 2>&1 || true' EXIT
cd test/cnpconformance
go run ./gen
args=(-kubeconfig /var/lib/weft-lab/admin.kubeconfig -weft-version "$(git -C "$root" rev-parse --short HEAD)" -report "$out/report.yaml")
if [[ -n "${ONLY:-}" ]]; then args+=(-only "$ONLY"); fi
rc=0
go test -count=1 -json -timeout 60m -run TestClusterNetworkPolicyConformance . -args "${args[@]}" > "$out/results.json" || rc=$?
go run ./doc < "$out/results.json" > "$out/README.md"
grep '^Result:' "$out/README.md"
if [[ "${DOC:-}" == 1 ]]; then
  mkdir -p "$root/docs/conformance"
  cp "$out/README.md" "$out/report.yaml" "$root/docs/conformance/"
  exit 0
fi
if [[ $rc != 0 ]]; then
  grep -v '^|.*| pass |' "$out/README.md" | tail -n +10
  echo "conformance failed: $out/results.json"
fi
exit $rc
