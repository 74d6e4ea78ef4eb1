#!/usr/bin/env bash
# `make e2e-upstream FOCUS=regex SKIP=regex`: run the upstream Kubernetes
# [sig-network] e2e suite (lab/k8s/e2enetwork, built with the control plane)
# from inside the lab: the control-plane node's namespace, which routes to
# pods, nodes and services like any node. Writes _output/e2e-upstream/
# {junit.xml,e2e.log,summary.txt}.
#
# FOCUS defaults to every [sig-network] spec; SKIP to the rules in
# internal/e2eupstream (each with its reason). With WEFT_E2E_REUSE=1 a lab that
# is already up is used and left up; otherwise a lab is brought up for the run
# and taken down after it. DUAL_STACK=1 brings the lab up with
# --dual-stack (for the [Feature:IPv6DualStack] specs); OUT names the output
# directory (default _output/e2e-upstream); FROM (default weft-control-plane)
# the lab target the suite runs in.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cp_dir=${CP_DIR:?CP_DIR (the control-plane cache) must be set; use make e2e-upstream}
focus=${FOCUS:-'\[sig-network\]'}
skip=${SKIP:-$(go run ./test/upstream skip-regex)}
out=$root/${OUT:-_output/e2e-upstream}
rm -rf "$out" && mkdir -p "$out"
git describe --always --dirty 2>/dev/null >"$out/revision" || echo unknown >"$out/revision"

if [[ ${WEFT_E2E_REUSE:-} != 1 ]]; then
  # Three racks = three zones: the trafficDistribution specs need them.
  dual=()
  [[ ${DUAL_STACK:-} == 1 ]] && dual=(--dual-stack)
  bin/weft lab up --nodes "${NODES:-3}" --racks "${RACKS:-3}" --backend "${BACKEND:-vxlan}" "${dual[@]}"
  trap 'bin/weft lab down' EXIT
fi

# The ginkgo CLI of the suite's own Ginkgo version runs it in parallel:
# PROCS processes (default 4), each its own API client; specs marked
# Serial run alone at the end. The specs mostly wait, so 2 CPUs carry 4.
ginkgo_version=$(sed -n 's|^\s*github.com/onsi/ginkgo/v2 \(v[0-9.]*\).*|\1|p' lab/k8s/go.mod)
ginkgo=$(dirname "$cp_dir")/ginkgo-$ginkgo_version
if [[ ! -x $ginkgo ]]; then
  (cd lab/k8s && go build -o "$ginkgo.tmp" github.com/onsi/ginkgo/v2/ginkgo) && mv "$ginkgo.tmp" "$ginkgo"
fi

# Only the first Ginkgo process counts the nodes; the others need telling.
workers=$(bin/weft lab kubectl get nodes -l '!node-role.kubernetes.io/control-plane' --no-headers | wc -l)

echo "upstream e2e: focus=$focus"
echo "              skip=$skip"
echo "              procs=${PROCS:-4}"
rc=0
# The suite calls kubectl (on PATH) and reaches pods and node ports directly.
# FROM=outside runs it from the outside namespace instead, a client outside
# the cluster's networks (the LoadBalancer specs check that its address is
# kept; with BACKEND=bgp the LoadBalancer addresses are routed to it).
bin/weft lab exec "${FROM:-weft-control-plane}" -- env PATH="$cp_dir:$PATH" HOME="$out" \
  "$ginkgo" --procs="${PROCS:-4}" --no-color --timeout="${TIMEOUT:-6h}" \
  --focus="$focus" --skip="$skip" --junit-report=junit.xml --output-dir="$out" \
  "$cp_dir/e2e-network.test" -- --provider=local --num-nodes="$workers" \
  --kubeconfig=/var/lib/weft-lab/admin-internal.kubeconfig \
  --report-dir="$out" >"$out/e2e.log" 2>&1 || rc=$?
tail -n 5 "$out/e2e.log"
go run ./test/upstream summary "$out/junit.xml" | tee "$out/summary.txt"
echo "log: $out/e2e.log  junit: $out/junit.xml"
# EXPECT_PASS=N: fail unless at least N specs passed (guards against a focus
# that silently matches nothing).
if [[ -n ${EXPECT_PASS:-} ]]; then
  passed=$(sed -n 's/^\[sig-network\] specs: \([0-9]*\) pass.*/\1/p' "$out/summary.txt")
  if (( ${passed:-0} < EXPECT_PASS )); then
    echo "expected at least $EXPECT_PASS passing specs, got ${passed:-0}" >&2
    rc=1
  fi
fi
if (( rc != 0 )); then
  # CI keeps only what is printed: show why the failed specs failed (the
  # framework's event dump of their namespaces) and what the lab's
  # kubelets and agents warned about, and keep the lab's logs.
  cp -r /var/lib/weft-lab/logs "$out/lab-logs" 2>/dev/null || true
  for f in /var/lib/weft-lab/nodes/*/pods/*/agent.log; do
    [[ -e $f ]] && cp "$f" "$out/lab-logs/agent-$(basename "$(dirname "$(dirname "$(dirname "$f")")")")-$(basename "$(dirname "$f")").log"
  done
  echo "--- failed specs, with the events of their namespaces (from e2e.log):"
  awk '/^• \[FAILED\]/{on=1} on&&n<400{print;n++} /^--------------------/{on=0}' "$out/e2e.log" |
    grep -E 'FAILED|\[FAILED\]|Event|event for|Warning|error|Pending|not ready' | head -n 120 || true
  echo "--- warnings and errors of the lab's kubelets and agents:"
  grep -hE 'level=(WARN|ERROR)' /var/lib/weft-lab/logs/node-*.log /var/lib/weft-lab/nodes/*/pods/*/agent.log 2>/dev/null |
    tail -n 60 || true
fi
exit $rc
