#!/usr/bin/env bash
# The registry of a local cluster (cluster.sh up FILE --registry etcd) on a real etcd:
# one member in each node namespace, peer and client traffic on the node's underlay
# address only, TLS everywhere, auth on with one role per node.
#
#   etcd.sh start                 certificates, members, users and roles, spec files
#   etcd.sh stop                  stop the members (TERM, then KILL), remove their data
#   etcd.sh member-stop NODE [KILL]   stop one member (data kept), SIGTERM or SIGKILL
#   etcd.sh member-start NODE     start it again with its data
#   etcd.sh leader                the name of the current leader
#   etcd.sh ctl ARGS...           etcdctl as root (in the infra namespace, over TLS)
#
# Environment: as cluster.sh (CLUSTER_PREFIX, CLUSTER_STATE); reads STATE/nodes.
# ETCD_NODES="node1 node2" sends ctl to those members only (etcdctl spreads its calls
# over every endpoint, and waits out its timeout on a partitioned one).
#
#   node ns <prefix>-n-node1                node ns <prefix>-n-node2       ...
#   etcd node1 https://10.200.0.1:2379      etcd node2 https://10.200.0.2:2379
#         peers https://10.200.0.1:2380           peers https://10.200.0.2:2380
#         data STATE/etcd/node1/data              data STATE/etcd/node2/data
#   tenc agent (CN node-node1)              tenc agent (CN node-node2)
#   \____________________ underlay ul0 (10.200.0.0/24) _____________________/
#                         infra ns: cluster tool (CN tenc-controller), etcdctl (CN root)
#
# STATE/etcd/pki: a CA made for this cluster, each member's certificate (its underlay
# address as SAN, server and client use), and client certificates whose CN is the
# etcd user (--client-cert-auth): root, tenc-controller (readwrite /tenc/), and
# node-<name> for each node's agent (readwrite /tenc/nodes/<name>/, read /tenc/).
# Keys are mode 0600 in 0700 directories. STATE/etcd/spec-<node> and
# STATE/etcd/spec-controller hold the --registry specs (own member first).
set -euo pipefail

PREFIX=${CLUSTER_PREFIX:-tc}
STATE=${CLUSTER_STATE:-/run/tenc-cluster/$PREFIX}
INFRA=$PREFIX-infra
E=$STATE/etcd
PKI=$E/pki
TENC_PREFIX=/tenc/

die() { echo "etcd.sh: $*" >&2; exit 1; }
log() { [ -n "${QUIET:-}" ] || echo "  $*"; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
[ -f "$STATE/nodes" ] || die "no cluster with prefix $PREFIX ($STATE/nodes missing)"

# NODE -> its namespace and underlay address
node_ns() { awk -v n="$1" '$1 == n {print $2}' "$STATE/nodes"; }
node_addr() { ip -n "$(node_ns "$1")" -4 -o addr show dev ul0 | awk '{split($4, a, "/"); print a[1]; exit}'; }
nodes() { awk '{print $1}' "$STATE/nodes"; }

ctl() { # etcdctl as root, from the infra namespace (only to the members of ETCD_NODES when set)
  local eps
  eps=$(for n in ${ETCD_NODES:-$(nodes)}; do printf 'https://%s:2379,' "$(node_addr "$n")"; done)
  ip netns exec "$INFRA" env ETCDCTL_API=3 etcdctl --endpoints "${eps%,}" --cacert "$PKI/ca.crt" \
    --cert "$PKI/root.crt" --key "$PKI/root.key" --dial-timeout=2s --command-timeout=5s "$@"
}

# --- certificates -------------------------------------------------------------------

cert() { # NAME CN [IP]: a key and a certificate signed by the cluster's CA
  local name=$1 cn=$2 ip=${3:-} ext
  ext=$(mktemp)
  if [ -n "$ip" ]; then
    printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$ip" >"$ext"
  else
    printf 'extendedKeyUsage=clientAuth\n' >"$ext"
  fi
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$name.key" 2>/dev/null)
  openssl req -new -key "$PKI/$name.key" -subj "/CN=$cn" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 7 \
    -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$ext" "$PKI/$name.csr"
}

make_pki() {
  local n
  mkdir -m 0700 -p "$PKI"
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/ca.key" 2>/dev/null)
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=tenc-etcd-ca-$PREFIX" -days 7 -out "$PKI/ca.crt" 2>/dev/null
  for n in $(nodes); do
    cert "member-$n" "member-$n" "$(node_addr "$n")"
    cert "node-$n" "node-$n"
  done
  cert root root
  cert controller tenc-controller
}

# --- members --------------------------------------------------------------------------

member_start() { # NODE
  local n=$1 ns addr cluster="" m
  ns=$(node_ns "$n")
  [ -n "$ns" ] || die "no node $n"
  addr=$(node_addr "$n")
  for m in $(nodes); do cluster+="$m=https://$(node_addr "$m"):2380,"; done
  mkdir -m 0700 -p "$E/$n"
  # new cluster on first start; a restart joins with its data (the flag is then ignored).
  # --pre-vote (etcd 3.5's default, not 3.4's): a member back from a partition does not
  # depose the leader with its higher term, so the heal costs no election.
  ip netns exec "$ns" setsid etcd --name "$n" --data-dir "$E/$n/data" \
    --listen-client-urls "https://$addr:2379" --advertise-client-urls "https://$addr:2379" \
    --listen-peer-urls "https://$addr:2380" --initial-advertise-peer-urls "https://$addr:2380" \
    --listen-metrics-urls "http://127.0.0.1:2381" \
    --initial-cluster "${cluster%,}" --initial-cluster-state new --initial-cluster-token "tenc-$PREFIX" \
    --cert-file "$PKI/member-$n.crt" --key-file "$PKI/member-$n.key" --trusted-ca-file "$PKI/ca.crt" --client-cert-auth \
    --peer-cert-file "$PKI/member-$n.crt" --peer-key-file "$PKI/member-$n.key" --peer-trusted-ca-file "$PKI/ca.crt" \
    --peer-client-cert-auth --pre-vote --log-level warn >>"$E/$n/etcd.log" 2>&1 </dev/null &
  echo $! >"$E/$n/pid"
}

alive() { [ -e "/proc/$1" ] && [[ $(ps -o stat= -p "$1" 2>/dev/null) != Z* ]]; }

member_stop() { # NODE [KILL]
  local f=$E/$1/pid pid i
  if [ ! -f "$f" ]; then
    [ "${2:-}" != KILL ] || die "member $1 is not running"
    return 0
  fi
  pid=$(cat "$f")
  [ "${2:-}" != KILL ] || [[ $(cat "/proc/$pid/comm" 2>/dev/null) == etcd ]] || die "pid $pid of member $1 is not etcd"
  if [ "${2:-}" = KILL ]; then
    kill -KILL "$pid" 2>/dev/null || true
  elif alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
  rm -f "$f"
}

wait_healthy() {
  local i
  for i in $(seq 100); do
    ctl endpoint health >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  ctl endpoint health >&2 || true
  die "the etcd members did not become healthy (logs: $E/*/etcd.log)"
}

start() {
  local n eps="" own
  command -v etcd >/dev/null && command -v etcdctl >/dev/null && command -v openssl >/dev/null ||
    die "needs etcd, etcdctl and openssl: run netns-scripts/deps.sh"
  [ ! -e "$E" ] || die "$E exists: etcd.sh stop first"
  mkdir -m 0700 "$E"
  make_pki
  for n in $(nodes); do member_start "$n"; done
  wait_healthy
  # users are authenticated by their certificate's CN; the passwords are random and thrown away
  ctl user add "root:$(openssl rand -hex 16)" >/dev/null
  ctl user grant-role root root >/dev/null
  ctl role add controller >/dev/null
  ctl role grant-permission controller --prefix=true readwrite "$TENC_PREFIX" >/dev/null
  ctl user add "tenc-controller:$(openssl rand -hex 16)" >/dev/null
  ctl user grant-role tenc-controller controller >/dev/null
  for n in $(nodes); do
    ctl role add "node-$n" >/dev/null
    ctl role grant-permission "node-$n" --prefix=true readwrite "${TENC_PREFIX}nodes/$n/" >/dev/null
    ctl role grant-permission "node-$n" --prefix=true read "$TENC_PREFIX" >/dev/null
    ctl user add "node-$n:$(openssl rand -hex 16)" >/dev/null
    ctl user grant-role "node-$n" "node-$n" >/dev/null
  done
  ctl auth enable >/dev/null
  for n in $(nodes); do eps+="https://$(node_addr "$n"):2379,"; done
  for n in $(nodes); do
    own="https://$(node_addr "$n"):2379"
    echo "etcd:$own,$(echo "${eps%,}" | tr , '\n' | grep -vx "$own" | paste -sd,)?ca=$PKI/ca.crt&cert=$PKI/node-$n.crt&key=$PKI/node-$n.key&prefix=$TENC_PREFIX" >"$E/spec-$n"
  done
  echo "etcd:${eps%,}?ca=$PKI/ca.crt&cert=$PKI/controller.crt&key=$PKI/controller.key&prefix=$TENC_PREFIX" >"$E/spec-controller"
  log "etcd: $(nodes | wc -l) members (${eps%,}), TLS and auth on (roles node-<node>, controller), data in $E"
}

stop() {
  local n
  [ -d "$E" ] || return 0
  for n in $(nodes); do member_stop "$n"; done
  rm -rf "$E"
}

leader() {
  local st line ep mid lid n
  # one object per reachable member (a member down makes etcdctl fail, the others are printed):
  # {"Endpoint":"https://ADDR:2379","Status":{"header":{..."member_id":M,...},...,"leader":L,...}}
  st=$(ctl endpoint status -w json 2>/dev/null) || true
  while read -r line; do
    ep=$(grep -o '"Endpoint":"https://[0-9.]*' <<<"$line" | sed 's|.*https://||')
    mid=$(grep -o '"member_id":[0-9]*' <<<"$line" | cut -d: -f2)
    lid=$(grep -o '"leader":[0-9]*' <<<"$line" | cut -d: -f2)
    [ -n "$mid" ] && [ "$mid" = "$lid" ] || continue
    for n in $(nodes); do
      if [ "$(node_addr "$n")" = "$ep" ]; then
        echo "$n"
        return 0
      fi
    done
  done < <(sed 's/},{"Endpoint"/}\n{"Endpoint"/g' <<<"$st")
  die "no leader"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  member-stop) [ $# -ge 2 ] || die "usage: etcd.sh member-stop NODE [KILL]"; member_stop "$2" "${3:-}" ;;
  member-start) [ $# -eq 2 ] || die "usage: etcd.sh member-start NODE"; member_start "$2" ;;
  leader) leader ;;
  ctl) shift; ctl "$@" ;;
  *) echo "usage: etcd.sh start | stop | member-stop NODE [KILL] | member-start NODE | leader | ctl ARGS..." >&2; exit 2 ;;
esac
