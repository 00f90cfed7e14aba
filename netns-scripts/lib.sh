# Namespace, veth and bridge building blocks shared by pods.sh, cluster.sh and the tests'
# scripts. Source it (`. "$(dirname "$0")/lib.sh"`); it defines functions only, sets
# nothing and runs nothing. Every function works on the namespaces it is given and
# touches nothing outside them (and /run/tenc sockets of those namespaces).

# ns_exists NS: is there a network namespace NS?
ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

# link_exists NS DEV: has NS a link DEV?
link_exists() { ip -n "$1" link show dev "$2" >/dev/null 2>&1; }

# ns_up NS: makes NS unless it exists, brings lo up and turns IPv6 duplicate address
# detection off, so addresses are usable at once.
ns_up() {
  local ns=$1
  ns_exists "$ns" || ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
}

# veth_into_bridge BR_NS BRIDGE PORT NS IFNAME MTU: a veth pair, PORT in BR_NS enslaved
# to BRIDGE and IFNAME in NS, both ends MTU and up.
veth_into_bridge() {
  local brns=$1 br=$2 port=$3 ns=$4 ifname=$5 mtu=$6
  ip -n "$brns" link add "$port" mtu "$mtu" type veth peer name "$ifname" mtu "$mtu" netns "$ns"
  ip -n "$brns" link set "$port" master "$br" up
  ip -n "$ns" link set "$ifname" up
}

# ns_stop_pids NS: stops every process in NS: TERM, up to 3 s grace, then KILL.
ns_stop_pids() {
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

# hosts_stop DIR: stops the pod hosts (`tenc pod --host`, src/agent/host.ts) whose stderr is
# a file under DIR (an agent's run directory): they live in the agent's namespace, not in
# a pod's, so ns_stop_pids never sees them, and an agent that stops leaves them running
# their pods. TERM (each pod stops), up to 5 s, then KILL.
hosts_stop() {
  local dir=$1 p pids="" i alive
  for p in /proc/[0-9]*; do
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q ' pod --host' || continue
    case $(readlink "$p/fd/2" 2>/dev/null) in "$dir"/*) pids="$pids ${p#/proc/}" ;; esac
  done
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for i in $(seq 50); do
    alive=""
    for p in $pids; do [ -d "/proc/$p" ] && alive="$alive $p"; done
    [ -n "$alive" ] || return 0
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL $alive 2>/dev/null || true
  sleep 0.2
}

# ns_remove NS: stops what runs in NS, removes the control sockets a killed tenc pod left
# for it (/run/tenc/<ifname>-<netns inode>.sock) and deletes it. Nothing if NS is absent.
ns_remove() {
  local ns=$1 ino
  [ -e "/run/netns/$ns" ] || return 0
  ns_stop_pids "$ns"
  ino=$(stat -L -c %i "/run/netns/$ns" 2>/dev/null || true)
  if [ -n "$ino" ] && [ -d /run/tenc ]; then
    find /run/tenc -maxdepth 1 -name "*-$ino.sock" -delete
  fi
  ip netns del "$ns"
}
