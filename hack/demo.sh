#!/usr/bin/env bash
# `make demo`: bring up a 3-node lab (plus the control-plane node), run
# pods, and print the connectivity table. The lab stays up afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=(--cache-dir "${CACHE_DIR:-/var/cache/weft-lab}")
# BACKEND=bgp (ROUTER=bird|frr) routes pods over BGP with a real router.
bin/weft lab up "${cache[@]}" --nodes "${NODES:-3}" --racks "${RACKS:-2}" --backend "${BACKEND:-auto}" ${ROUTER:+--router "$ROUTER"}
bin/weft lab demo "${cache[@]}"
bin/weft lab status "${cache[@]}"
cat <<'MSG'
The lab is up. Try:
  bin/weft lab kubectl get pods -A -o wide
  bin/weft lab exec weft-demo/<pod> -- curl -s http://203.0.113.10:8080/clientip
  bin/weft lab down
MSG
