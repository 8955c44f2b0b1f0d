#!/bin/sh
# Regenerate the `ip` output in this directory (as root; iproute2's `ip`, network namespaces).
# A pod namespace with eth0 (192.0.2.10/24, 2001:db8::10/64; its veth peer in a second namespace),
# default routes via 192.0.2.1 / 2001:db8::1, and istio-init's TPROXY policy routing in both
# families. Only documentation addresses; both namespaces are deleted on exit, also on failure.
set -eu
here=${1:-$(dirname "$0")}  # where to write (default: next to this script)
pod=meshsolve-routing-pod-$$
peer=meshsolve-routing-peer-$$
trap 'ip netns del "$pod" 2>/dev/null || true; ip netns del "$peer" 2>/dev/null || true' EXIT
ip netns add "$pod"
ip netns add "$peer"
in_pod() { ip netns exec "$pod" "$@"; }
in_pod ip link set lo up
in_pod ip link add eth0 type veth peer name eth0 netns "$peer"
in_pod ip addr add 192.0.2.10/24 dev eth0
in_pod ip -6 addr add 2001:db8::10/64 dev eth0 nodad
in_pod ip link set eth0 up
ip netns exec "$peer" ip link set eth0 up
in_pod ip route add default via 192.0.2.1 dev eth0
in_pod ip -6 route add default via 2001:db8::1 dev eth0
# istio-init, TPROXY mode (both families)
in_pod ip rule add fwmark 0x539/0xffffffff lookup 133
in_pod ip route add local default dev lo table 133
in_pod ip -6 rule add fwmark 0x539/0xffffffff lookup 133
in_pod ip -6 route add local default dev lo table 133
in_pod ip rule show > "$here/tproxy-ip-rule-show.txt"
in_pod ip route show table all > "$here/tproxy-ip-route-show-table-all.txt"
in_pod ip -6 rule show > "$here/tproxy-ip6-rule-show.txt"
in_pod ip -6 route show table all > "$here/tproxy-ip6-route-show-table-all.txt"
{ uname -r; ip -V; } > "$here/generated-with.txt"
