#!/usr/bin/env bash
# `make bench`: runs every benchmark once, each figure beside its baseline
# in the same run, and writes bench/RESULTS.md (each section says its
# command, date and commit). BENCH_ONLY="netpol dns" runs only the sections
# named and keeps the others' last results, marked as such. A figure that
# could not be measured prints FAILED; the file is still written and the
# target fails. Analysis and history belong in bench/NOTES.md, not here.
set -uo pipefail
cd "$(dirname "$0")/.."
out=bench/RESULTS.md
tmp=$(mktemp)
mkdir -p _output
trap 'rm -f "$tmp"' EXIT
status=0
only=" ${BENCH_ONLY:-} "
section() { # name, command...
  local name=$1; shift
  echo "<!-- bench:$name -->"
  if [[ $only != "  " && $only != *" $name "* ]]; then
    # Not run this time: the last run's section, which carries its own date.
    local kept
    kept=$(sed -n "/^<!-- bench:$name -->\$/,/^<!-- \/bench:$name -->\$/p" "$out" | sed '1d;$d')
    printf '%s\n' "${kept:-**$name: not run yet** (run \`BENCH_ONLY=$name make bench\`)}"
  else
    echo "bench: $name" >&2
    local rc=0
    "$@" 2>"_output/bench-$name.log" || rc=$?
    if (( rc != 0 )); then
      echo "**$name: FAILED** (exit status $rc; see _output/bench-$name.log)"
      echo
      status=1
    fi
  fi
  echo "<!-- /bench:$name -->"
  echo
}
labup() {
  echo "### \`weft lab up\` time, control plane cached"
  echo
  echo "hack/bench.sh, run on $(date -u +%Y-%m-%d) at commit $(git describe --always --dirty). 3 control-plane components + etcd, 1 control-plane node + 3 workers in 2 racks; from \`up\` to every node Ready."
  echo "No baseline run here: kind needs a Docker engine, which these machines do not have."
  echo
  echo "| run | seconds |"
  echo "| --- | --- |"
  local times=() i s e t
  for i in 1 2 3; do
    s=$(date +%s.%N)
    bin/weft lab up --nodes 3 --racks 2 >/dev/null || return 1
    e=$(date +%s.%N)
    t=$(echo "$e - $s" | bc)
    times+=("$t")
    printf '| %d | %.1f |\n' "$i" "$t"
    bin/weft lab down >/dev/null
  done
  printf '\nMedian: %.1f s.\n\n' "$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)"
}
# demo_cold times `make demo` from a clean clone with empty Go build and
# control-plane caches (the Go module cache stays: these machines fetch
# modules from a local proxy).
demo_cold() {
  local dir s e t commit
  dir=$(mktemp -d /tmp/weft-demo-cold.XXXX)
  git clone -q . "$dir/weft" || return 1
  commit=$(git -C "$dir/weft" describe --always)
  bin/weft lab down >/dev/null 2>&1
  s=$(date +%s.%N)
  if ! (cd "$dir/weft" && GOCACHE=$dir/gocache CACHE_DIR=$dir/cache make demo) >_output/demo-cold.log 2>&1; then
    (cd "$dir/weft" && bin/weft lab down) >/dev/null 2>&1
    rm -rf "$dir"
    return 1
  fi
  e=$(date +%s.%N)
  t=$(echo "$e - $s" | bc)
  (cd "$dir/weft" && bin/weft lab down) >/dev/null 2>&1
  rm -rf "$dir"
  echo "### \`make demo\` on a fresh machine"
  echo
  echo "hack/bench.sh (demo_cold), run on $(date -u +%Y-%m-%d) at commit $commit (a clean clone of it): empty Go build cache and control-plane cache (Go modules already downloaded), $(nproc) CPUs; from \`make demo\` to its table printed and the lab up. Log: _output/demo-cold.log."
  echo
  printf '%.0f s (%.1f min). Target ≤ 8 min: %s.\n\n' "$t" "$(echo "$t / 60" | bc -l)" "$( (( $(echo "$t <= 480" | bc) )) && echo met || echo MISSED)"
}
{
  echo "# Benchmark results"
  echo
  if [[ -z ${BENCH_ONLY:-} ]]; then
    echo "Written by \`make bench\` (hack/bench.sh) in one run finished on $(date -u +%Y-%m-%d), $(nproc) CPUs, kernel $(uname -r), weft $(git describe --always --dirty 2>/dev/null || echo dev)."
  else
    echo "Written by \`make bench\` (hack/bench.sh) on $(nproc) CPUs, kernel $(uname -r); sections from more than one run (the last, on $(date -u +%Y-%m-%d) at weft $(git describe --always --dirty 2>/dev/null || echo dev), ran \`BENCH_ONLY=\"${BENCH_ONLY}\"\`): each section's first line gives its own date and commit."
  fi
  echo "Shared machines are noisy: compare figures within one run, not across runs. What the figures mean, what was tried and earlier runs: [NOTES.md](NOTES.md)."
  echo
  section cni go run ./bench/cni -pods "${BENCH_PODS:-200}" -weft-cni bin/weft-cni
  section podnet go run ./bench/podnet -bin bin
  section routing go run ./bench/routing -bin bin
  section bgp go run ./bench/bgp -bin bin
  section netpol go run ./bench/netpol -bin bin
  section proxy go run ./bench/proxy -bin bin -levels "${BENCH_PROXY_LEVELS:-10,1000,10000}"
  section dns go run ./bench/dns -bin bin
  section ingress go run ./bench/ingress -bin bin
  section lab-up labup
  section demo-cold demo_cold
} > "$tmp"
mv "$tmp" "$out"
trap - EXIT
cat "$out"
exit $status
