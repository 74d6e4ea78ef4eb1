#!/usr/bin/env bash
# The kernel's own VXLAN ceiling on this machine, without weft: two "nodes"
# (network namespaces on one bridge, GRO on as in the lab) and one "pod"
# behind each (a routed veth, MTU 1450), joined by a plain kernel VXLAN
# device with static FDB and neighbour entries, routes and nothing else:
# no nftables, no conntrack, no agent. This is the datapath every
# kernel-VXLAN overlay (weft's vxlan backend, Flannel's vxlan backend)
# builds, so pod→pod / node→node here is the best such an overlay can
# reach on this machine. Prints a Markdown section; alternates node and
# pod runs so that both see the same machine load.
#
# Namespaces are named weft-bx-* (removed on exit, and by `weft lab up` if
# a crashed run left them). Addresses: 198.18.250.0/24 underlay,
# 10.250.N.0/24 pods; nothing leaves these namespaces.
set -euo pipefail
rounds=${ROUNDS:-5} secs=${SECS:-5}
nss=(weft-bx-bridge weft-bx-node1 weft-bx-node2 weft-bx-pod1 weft-bx-pod2)
cleanup() { for n in "${nss[@]}"; do ip netns del "$n" 2>/dev/null || true; done; }
cleanup
trap cleanup EXIT
for n in "${nss[@]}"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip -n weft-bx-bridge link add br0 type bridge
ip -n weft-bx-bridge link set br0 up
for i in 1 2; do
  node=weft-bx-node$i pod=weft-bx-pod$i
  ip link add "bxport$i" netns weft-bx-bridge type veth peer name eth0 netns "$node"
  ip -n weft-bx-bridge link set "bxport$i" master br0
  ip -n weft-bx-bridge link set "bxport$i" up
  ip -n "$node" addr add "198.18.250.$i/24" dev eth0
  ip -n "$node" link set eth0 up
  ip netns exec "$node" ethtool -K eth0 gro on rx-udp-gro-forwarding on >/dev/null
  ip netns exec weft-bx-bridge ethtool -K "bxport$i" gro on rx-udp-gro-forwarding on >/dev/null
  ip netns exec "$node" sysctl -qw net.ipv4.ip_forward=1
  ip link add "veth$i" netns "$node" mtu 1450 type veth peer name eth0 netns "$pod" mtu 1450
  ip -n "$pod" addr add "10.250.$i.2/32" dev eth0
  ip -n "$pod" link set eth0 up
  ip -n "$pod" route add 169.254.1.1 dev eth0
  ip -n "$pod" route add default via 169.254.1.1 dev eth0
  ip -n "$node" link set "veth$i" up
  ip -n "$node" addr add 169.254.1.1/32 dev "veth$i"
  ip -n "$node" route add "10.250.$i.2/32" dev "veth$i"
  ip -n "$node" link add vx type vxlan id 1 local "198.18.250.$i" dev eth0 dstport 4789 nolearning
  ip -n "$node" link set vx address "02:00:00:00:00:0$i"
  ip -n "$node" addr add "10.250.$i.0/32" dev vx
  ip -n "$node" link set vx up
done
for i in 1 2; do
  node=weft-bx-node$i peer=$((3 - i))
  ip -n "$node" neigh add "10.250.$peer.0" lladdr "02:00:00:00:00:0$peer" dev vx nud permanent
  bridge -n "$node" fdb add "02:00:00:00:00:0$peer" dev vx dst "198.18.250.$peer"
  ip -n "$node" route add "10.250.$peer.0/24" via "10.250.$peer.0" dev vx onlink
done
ip netns exec weft-bx-node2 iperf3 -s -D -p 5401 >/dev/null
ip netns exec weft-bx-pod2 iperf3 -s -D -p 5402 >/dev/null
trap 'pkill -f "iperf3 -s -D -p 540[12]" || true; cleanup' EXIT
sleep 0.5
# $4: extra iperf3 flags; "-A 0,1" pins the client to CPU 0 and the server
# to CPU 1 (two real nodes never share a CPU; bench/podnet does the same).
gbit() { ip netns exec "$1" iperf3 -c "$2" -p "$3" -t "$secs" $4 -J | jq '.end.sum_received.bits_per_second / 1e9'; }
echo "### Kernel VXLAN ceiling on this machine (no weft)"
echo
echo "\`bench/vxlanceiling/run.sh\` (part of \`make bench\`): two namespaces on one bridge as nodes, a routed-veth pod (MTU 1450) behind each, a plain kernel VXLAN device with static FDB/neighbour entries between them; no nftables, no conntrack, no agent. iperf3 single stream, ${secs} s, node and pod runs alternating; pinned = client on CPU 0, server on CPU 1 (\`-A 0,1\`, as in bench/podnet), free = the scheduler places both. Pod→pod over node→node here is the most any kernel-VXLAN overlay (weft's, Flannel's) can reach on this machine."
echo
echo "| round | node→node pinned | pod→pod pinned | ratio pinned | node→node free | pod→pod free | ratio free |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
pinned=() free=()
for r in $(seq "$rounds"); do
  n=$(gbit weft-bx-node1 198.18.250.2 5401 "-A 0,1")
  p=$(gbit weft-bx-pod1 10.250.2.2 5402 "-A 0,1")
  nf=$(gbit weft-bx-node1 198.18.250.2 5401 "")
  pf=$(gbit weft-bx-pod1 10.250.2.2 5402 "")
  pinned+=("$(echo "$p / $n" | bc -l)")
  free+=("$(echo "$pf / $nf" | bc -l)")
  printf '| %d | %.2f Gbit/s | %.2f Gbit/s | %.2f | %.2f Gbit/s | %.2f Gbit/s | %.2f |\n' "$r" "$n" "$p" "${pinned[-1]}" "$nf" "$pf" "${free[-1]}"
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( (rounds + 1) / 2 ))p"; }
printf '\nMedian ratio: %.2f pinned, %.2f free.\n\n' "$(median "${pinned[@]}")" "$(median "${free[@]}")"
