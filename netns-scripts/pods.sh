#!/usr/bin/env bash
# Two "pods" on one "node" for the demo, the netns tests and the benchmarks.
#
#   pods.sh up      build the topology (idempotent: creates only what is missing)
#   pods.sh down    stop what runs in the namespaces and remove everything (idempotent)
#   pods.sh status  show the namespaces, addresses and routes
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

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
link_exists() { ip -n "$1" link show dev "$2" >/dev/null 2>&1; }

ensure_ns() {
  local ns=$1
  ns_exists "$ns" || ip netns add "$ns"
  ip -n "$ns" link set lo up
  # no duplicate address detection: addresses are usable at once
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
}

# ensure_pod NS VETH_ON_BRIDGE V4 V6
ensure_pod() {
  local ns=$1 brport=$2 v4=$3 v6=$4
  ensure_ns "$ns"
  if ! link_exists "$ns" eth0; then
    link_exists "$NS_BR" "$brport" && ip -n "$NS_BR" link del dev "$brport"
    ip -n "$NS_BR" link add "$brport" mtu "$MTU" type veth peer name eth0 mtu "$MTU" netns "$ns"
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
  ensure_ns "$NS_A"
  ensure_ns "$NS_B"
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
  ensure_ns "$NS_BR"
  link_exists "$NS_BR" br0 || ip -n "$NS_BR" link add br0 type bridge
  ip -n "$NS_BR" link set dev br0 mtu "$MTU" up
  ip -n "$NS_BR" addr replace 10.77.0.254/24 dev br0
  ip -n "$NS_BR" -6 addr replace fd00:77::fe/64 dev br0 nodad
  ensure_pod "$NS_A" veth-a 10.77.0.1 fd00:77::1
  ensure_pod "$NS_B" veth-b 10.77.0.2 fd00:77::2
  ip -n "$NS_BR" link set dev br0 mtu "$MTU"
}

# Stops every process in the namespace: TERM, up to 3 s grace, then KILL.
stop_pids() {
  local ns=$1 pids i
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for i in $(seq 30); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] || return 0
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  sleep 0.2
}

down() {
  local ns ino
  for ns in "$NS_A" "$NS_B" "$NS_BR"; do
    ns_exists "$ns" || continue
    stop_pids "$ns"
    # control sockets a killed tenc pod could not remove: /run/tenc/<ifname>-<netns inode>.sock
    ino=$(stat -L -c %i "/run/netns/$ns" 2>/dev/null || true)
    if [ -n "$ino" ] && [ -d /run/tenc ]; then
      find /run/tenc -maxdepth 1 -name "*-$ino.sock" -delete
    fi
    ip netns del "$ns"
  done
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
  status) status ;;
  *)
    echo "usage: pods.sh up|down|status   (env: MTU=9000 for jumbo frames, PODS_PREFIX=name for other namespace names, TOPOLOGY=veth for one veth pair without a bridge)" >&2
    exit 2
    ;;
esac
