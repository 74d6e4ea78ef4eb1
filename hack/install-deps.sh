#!/usr/bin/env bash
# Installs the Debian packages weft's lab, tests and benchmarks use, and
# fetches Go modules. Safe to run again: it only installs what is missing.
set -euo pipefail
need=()
for pair in bird:bird2 vtysh:frr nft:nftables ip:iproute2 curl:curl iperf3:iperf3 conntrack:conntrack bc:bc ping:iputils-ping bridge:iproute2 ethtool:ethtool sysctl:procps pgrep:procps nsenter:util-linux nc:netcat-openbsd dig:bind9-dnsutils busybox:busybox dnsperf:dnsperf jq:jq nginx:nginx wrk:wrk; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v go >/dev/null 2>&1 || { echo "Go is required (https://go.dev/doc/install); expected at /usr/local/go/bin" >&2; exit 1; }
go mod download
(cd lab/k8s && go mod download)
