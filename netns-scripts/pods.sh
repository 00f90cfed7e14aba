#!/usr/bin/env bash
# Two "pods" on one "node" for the demo, the netns tests and the benchmarks.
#
#   pods.sh up      build the topology (idempotent: creates only what is missing)
#   pods.sh down    stop what runs in the namespaces and remove everything (idempotent)
#   pods.sh status  show the namespaces, addresses and routes
#   pods.sh add NAME N  one more pod <prefix>-NAME on the bridge, built as a and b are,
#                   with 10.77.0.N and fd00:77::N (the tests' extra pods; they remove it)
#
# Each pod is a network namespace with one veth (eth0) into a bridge that lives in
# its own namespace, like pods on a node's bridge. The bridge namespace holds the
# gateway addresses the pods' default routes point at; it does not forward.
#
#  +----------------------------+                      +----------------------------+
#  |  netns tenc-a  ("pod a")   |                      |  netns tenc-b  ("pod b")   |
#  |                            |                      |                            |
#  |  eth0  10.77.0.1/24        |                      |  eth0  10.77.0.2/24        |
#  |        fd00:77::1/64       |                      |        fd00:77::2/64       |
#  |  default via 10.77.0.254   |                      |  default via 10.77.0.254   |
#  |          fd00:77::fe       |                      |          fd00:77::fe       |
#  |  (tenc0 appears here when  |                      |  (tenc0 appears here when  |
#  |   `tenc pod` runs)         |                      |   `tenc pod` runs)         |
#  +------------|---------------+                      +---------------|------------+
#               | veth                                                 | veth
#  +------------|------------------------------------------------------|------------+
#  |          veth-a ---------------------- br0 ---------------------- veth-b        |
#  |                              10.77.0.254/24  fd00:77::fe/64                    |
#  |                           netns tenc-br  ("node")                              |
#  +--------------------------------------------------------------------------------+
#
# TOPOLOGY=veth joins the two pods by one veth pair instead (a's eth0 is b's eth0's
# peer; no bridge namespace, on-link addresses, default routes through eth0): the
# "direct veth" topology of the benchmarks.
#
# MTU: every link gets $MTU (default 1500, so tenc0 = 1440 over IPv4); iperf3 runs
# fine at that size and with MTU=9000 for jumbo-frame benchmarks.
# Addresses: 10.77.0.0/24 and fd00:77::/64 only. Nothing outside the three
# namespaces is touched.
set -euo pipefail
# shellcheck source=netns-scripts/lib.sh
. "$(dirname "$0")/lib.sh"

# PODS_PREFIX renames the namespaces (<prefix>-a, -b, -br) so tests can build a
# private copy next to a running demo.
PREFIX=${PODS_PREFIX:-tenc}
NS_A=$PREFIX-a
NS_B=$PREFIX-b
NS_BR=$PREFIX-br
MTU=${MTU:-1500}
TOPOLOGY=${TOPOLOGY:-bridge}
case "$TOPOLOGY" in bridge|veth) ;; *) echo "pods.sh: TOPOLOGY must be bridge or veth, got $TOPOLOGY" >&2; exit 2 ;; esac

die() { echo "pods.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (creates network namespaces)"
command -v ip >/dev/null || die "needs iproute2 (ip): run netns-scripts/deps.sh"

# ensure_pod NS VETH_ON_BRIDGE V4 V6
ensure_pod() {
  local ns=$1 brport=$2 v4=$3 v6=$4
  ns_up "$ns"
  if ! link_exists "$ns" eth0; then
    link_exists "$NS_BR" "$brport" && ip -n "$NS_BR" link del dev "$brport"
    veth_into_bridge "$NS_BR" br0 "$brport" "$ns" eth0 "$MTU"
  fi
  ip -n "$NS_BR" link set dev "$brport" mtu "$MTU" master br0 up
  ip -n "$ns" link set dev eth0 mtu "$MTU" up
  ip -n "$ns" addr replace "$v4/24" dev eth0
  ip -n "$ns" -6 addr replace "$v6/64" dev eth0 nodad
  ip -n "$ns" route replace default via 10.77.0.254 dev eth0
  ip -n "$ns" -6 route replace default via fd00:77::fe dev eth0
}

# The direct topology: one veth pair, a's eth0 <-> b's eth0.
up_veth() {
  ns_up "$NS_A"
  ns_up "$NS_B"
  if ! link_exists "$NS_A" eth0 || ! link_exists "$NS_B" eth0; then
    link_exists "$NS_A" eth0 && ip -n "$NS_A" link del dev eth0
    link_exists "$NS_B" eth0 && ip -n "$NS_B" link del dev eth0
    ip -n "$NS_A" link add eth0 mtu "$MTU" type veth peer name eth0 mtu "$MTU" netns "$NS_B"
  fi
  local ns v4 v6
  for ns in "$NS_A" "$NS_B"; do
    if [ "$ns" = "$NS_A" ]; then v4=10.77.0.1 v6=fd00:77::1; else v4=10.77.0.2 v6=fd00:77::2; fi
    ip -n "$ns" link set dev eth0 mtu "$MTU" up
    ip -n "$ns" addr replace "$v4/24" dev eth0
    ip -n "$ns" -6 addr replace "$v6/64" dev eth0 nodad
    ip -n "$ns" route replace default dev eth0
    ip -n "$ns" -6 route replace default dev eth0
  done
}

up() {
  if [ "$TOPOLOGY" = veth ]; then
    up_veth
    return
  fi
  ns_up "$NS_BR"
  # a fixed MAC: otherwise the bridge takes the lowest of its ports' and changes it as pods join
  link_exists "$NS_BR" br0 || ip -n "$NS_BR" link add br0 address 02:00:0b:77:00:fe type bridge
  ip -n "$NS_BR" link set dev br0 mtu "$MTU" up
  ip -n "$NS_BR" addr replace 10.77.0.254/24 dev br0
  ip -n "$NS_BR" -6 addr replace fd00:77::fe/64 dev br0 nodad
  ensure_pod "$NS_A" veth-a 10.77.0.1 fd00:77::1
  ensure_pod "$NS_B" veth-b 10.77.0.2 fd00:77::2
  ip -n "$NS_BR" link set dev br0 mtu "$MTU"
}

# One more pod on the bridge of a running bridge topology.
add() {
  local name=$1 n=$2
  [[ $name =~ ^[a-z0-9]{1,8}$ ]] || die "add: NAME must be 1..8 lowercase letters/digits, got '$name'"
  [[ $n =~ ^[0-9]{1,3}$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 253 ] || die "add: N must be 1..253, got '$n'"
  [ "$TOPOLOGY" = bridge ] && link_exists "$NS_BR" br0 || die "add: no bridge topology $NS_BR (run pods.sh up first)"
  ensure_pod "$PREFIX-$name" "veth-$name" "10.77.0.$n" "fd00:77::$n"
}

# Stops what runs in the namespaces and removes them, with the sockets of killed pods.
down() {
  local ns
  for ns in "$NS_A" "$NS_B" "$NS_BR"; do ns_remove "$ns"; done
}

status() {
  local ns
  for ns in "$NS_BR" "$NS_A" "$NS_B"; do
    if ns_exists "$ns"; then
      echo "== $ns"
      ip -n "$ns" -br addr
      ip -n "$ns" route
      ip -n "$ns" -6 route | grep -v '^fe80' || true
    else
      echo "== $ns (absent)"
    fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  add) [ $# -eq 3 ] || die "usage: pods.sh add NAME N"; add "$2" "$3" ;;
  status) status ;;
  *)
    echo "usage: pods.sh up|down|status|add NAME N   (env: MTU=9000 for jumbo frames, PODS_PREFIX=name for other namespace names, TOPOLOGY=veth for one veth pair without a bridge)" >&2
    exit 2
    ;;
esac
