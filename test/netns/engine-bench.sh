#!/usr/bin/env bash
# iperf3 (TCP, one stream, A -> B) through two namespaces joined by a veth:
# plain veth, then the native engine (test/netns/engine-child.ts, static keys) in
# raw and tun inject modes with offloads off and on. Root only.
#
#   ns tenc-bench-a                  ns tenc-bench-b
#   tenc0 10.212.0.1  <- engine ->   tenc0 10.212.0.2
#   veA 10.211.0.1/24 <-- veth -->   veB 10.211.0.2/24
#
# usage: test/netns/engine-bench.sh [seconds=5] [rounds=1]
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=netns-scripts/lib.sh
. netns-scripts/lib.sh
SECS=${1:-5}
ROUNDS=${2:-1}
A=tenc-bench-a
B=tenc-bench-b
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -f /tmp/tenc-bench-a.in /tmp/tenc-bench-b.in
  ns_remove $A
  ns_remove $B
}
trap cleanup EXIT
for t in ip iperf3 node openssl; do command -v $t >/dev/null || { echo "engine-bench: $t missing (netns-scripts/deps.sh)" >&2; exit 1; }; done

topology() {
  cleanup
  PIDS=()
  ns_up $A
  ns_up $B
  ip link add veA netns $A type veth peer name veB netns $B
  ip -n $A addr add 10.211.0.1/24 dev veA
  ip -n $B addr add 10.211.0.2/24 dev veB
  ip -n $A link set veA up
  ip -n $B link set veB up
}

iperf() { # iperf SERVER_ADDR: prints "x.xx Gbits/sec"
  ip netns exec $B iperf3 -s -1 -B "$1" >/dev/null 2>&1 &
  local s=$!
  sleep 0.5
  ip netns exec $A iperf3 -c "$1" -t "$SECS" -f g 2>&1 | awk '/receiver/ {print $(NF-2), $(NF-1)}'
  wait $s 2>/dev/null || true
}

engine() { # engine MODE OFFLOADS
  topology
  local k1 k2
  k1=$(openssl rand -hex 32)
  k2=$(openssl rand -hex 32)
  for side in a b; do
    local ns=$A me=1 other=2 lid=1 rid=2 sk=$k1 rk=$k2 peer=1
    [ $side = b ] && ns=$B me=2 other=1 lid=2 rid=1 sk=$k2 rk=$k1 peer=7
    local cfg="{\"mode\":\"$1\",\"offloads\":$2,\"listenPort\":51820,\"fwmark\":0,\"peer\":{\"id\":$peer,\"endpoint\":{\"address\":\"10.211.0.$other\",\"port\":51820},\"allowedIps\":[\"10.212.0.$other/32\"]},\"keypair\":{\"localIndex\":$lid,\"remoteIndex\":$rid,\"sendKey\":\"$sk\",\"recvKey\":\"$rk\"},\"extra\":[]}"
    local out=/tmp/tenc-bench-$side.out
    : >"$out"
    # stdin held open by a sleep writing to a fifo; both PIDs are killed in cleanup.
    local fifo=/tmp/tenc-bench-$side.in
    rm -f "$fifo"
    mkfifo "$fifo"
    ip netns exec $ns node --import ./test/netns/engine-register.mjs test/netns/engine-child.ts "$cfg" <"$fifo" >"$out" 2>&1 &
    PIDS+=($!)
    sleep 3600 >"$fifo" &
    PIDS+=($!)
    for _ in $(seq 100); do grep -q ready "$out" && break; sleep 0.1; done
    grep -q ready "$out" || { cat "$out" >&2; exit 1; }
    ip -n $ns addr add 10.212.0.$me/32 dev tenc0
    ip -n $ns link set tenc0 mtu 1420 up
    ip -n $ns route add 10.212.0.$other/32 dev tenc0
  done
  echo "engine $1 offloads=$2: $(iperf 10.212.0.2)"
}

for r in $(seq "$ROUNDS"); do
  topology
  echo "round $r: plain veth: $(iperf 10.211.0.2)"
  for mode in raw tun; do
    for off in false true; do
      echo -n "round $r: "
      engine $mode $off
    done
  done
done
