#!/usr/bin/env bash
# `make bench`: runs every benchmark, each beside its baseline in the same
# run, and writes bench/RESULTS.md with the command that produced it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/RESULTS.md
tmp=$(mktemp)
mkdir -p _output
trap 'rm -f "$tmp"' EXIT
{
  echo "# Benchmark results"
  echo
  echo "Produced by \`make bench\` (hack/bench.sh) on $(date -u +%Y-%m-%d), $(nproc) CPUs, kernel $(uname -r), weft $(git describe --always --dirty 2>/dev/null || echo dev)."
  echo "Shared machines are noisy: compare figures within one run, not across runs."
  echo
  go run ./bench/cni -pods "${BENCH_PODS:-200}" -weft-cni bin/weft-cni
  go run ./bench/podnet -bin bin 2>_output/bench-podnet.log
  bench/vxlanceiling/run.sh
  go run ./bench/proxy -bin bin -levels "${BENCH_PROXY_LEVELS:-10,1000,10000}" 2>_output/bench-proxy.log
  go run ./bench/dns -bin bin 2>_output/bench-dns.log
  echo "### \`weft lab up\` time, control plane cached"
  echo
  echo "3 control-plane components + etcd, 1 control-plane node + 3 workers in 2 racks; from \`up\` to every node Ready."
  echo "No baseline run here: kind needs a Docker engine, which these machines do not have."
  echo
  echo "| run | seconds |"
  echo "| --- | --- |"
  times=()
  for i in 1 2 3; do
    s=$(date +%s.%N)
    bin/weft lab up --nodes 3 --racks 2 >/dev/null
    e=$(date +%s.%N)
    t=$(echo "$e - $s" | bc)
    times+=("$t")
    printf '| %d | %.1f |\n' "$i" "$t"
    bin/weft lab down >/dev/null
  done
  median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)
  printf '\nMedian: %.1f s.\n' "$median"
} > "$tmp"
mv "$tmp" "$out"
trap - EXIT
cat "$out"
