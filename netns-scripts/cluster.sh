#!/usr/bin/env bash
# A small cluster made of network namespaces, from a declarative JSON file.
#
#   cluster.sh up FILE            validate FILE (nothing is built if it is invalid), build the cluster
#   cluster.sh up FILE --registry etcd   the same with the registry on etcd: one member per node
#                                 (netns-scripts/etcd.sh), agents in their node's namespace
#   cluster.sh up FILE --registry kubernetes   the agents on a Kubernetes API: each node's
#                                 --registry kubernetes:$CLUSTER_KUBECONFIGS/<node>.kubeconfig
#   cluster.sh down               stop agents and processes, remove everything `up` made
#   cluster.sh status             namespaces, pods, services, agents
#   cluster.sh add-pod JSON       one more pod, e.g. '{"name":"alpha-web-2","project":"alpha",
#                                 "node":"node2","address":"10.128.2.30","labels":{"app":"web"}}';
#                                 one that fails (its CNI ADD refused: agent down) leaves nothing
#   cluster.sh remove-pod NAME    delete a pod (CNI DEL through the chain, then its namespace)
#   cluster.sh policy-apply JSON  create or replace a TencPolicy (kubectl apply; README "Policies"),
#                                 checked with the whole file: a bad one changes nothing
#   cluster.sh policy-delete PROJECT NAME   delete a TencPolicy
#   cluster.sh agent-start        start the node agents that are not running (one per node)
#   cluster.sh agent-stop         stop the node agents (SIGTERM; the pod proxies keep running,
#                                 fail-closed, and the next agent adopts them)
#   cluster.sh cni ADD|DEL|CHECK POD   run the pod's CNI chain once more (the runtime's retry)
#
# Pods are made as containerd makes them: an empty namespace, then the node's CNI chain
# STATE/cni/<node>.conflist run in the node's namespace (Debian's /usr/lib/cni bridge with
# host-local IPAM, the cluster file's pod addresses requested through runtimeConfig.ips; loopback;
# then tenc's plugin STATE/cni/bin/tenc, the static C binary of cni/tenc-cni.c that `up` builds
# with cni/build.sh as a real node's /opt/cni/bin/tenc; it asks the node agent over its socket
# and returns once the pod is fail-closed). So `up` starts one `tenc agent` per node before any pod.
#
# Environment: CLUSTER_PREFIX (default tc) names every namespace, CLUSTER_STATE (default
# /run/tenc-cluster/<prefix>, mode 0700) holds the state: the validated cluster.json, the
# projects' psk files, the registry directory, kube-proxy rules, DNS records, the CNI
# conflists, launcher and IPAM data, agents' sockets, pids, state and logs. CLUSTER_PROTECT
# (comma-separated projects, default every project of the file) names the projects the
# agents protect; pods of the others pass through tenc's ADD untouched. CLUSTER_METRICS_PORT=P
# starts the n-th node's agent (n from 0, in the file's order) with --metrics-address
# 127.0.0.1:P+n, in the namespace the agent runs in (the host's; with etcd, its node's).
# The file format is described in src/agent/cluster-config.ts and README.md.
#
#   pod ns <prefix>-<pod>              pod ns                         pod ns
#   eth0 10.128.1.10/24                eth0 10.128.1.11/24            eth0 10.128.2.10/24
#        | veth                             | veth                         | veth
#   +----|-----------------------------------|-----------+   +------------|-------------------+
#   |   v0a80010a ------ br0 10.128.1.1 ----- v0a80010b  |   |   br0 10.128.2.1 -- v0a80020a  |
#   |   node ns <prefix>-n-node1 (routes, kube-proxy     |   |   node ns <prefix>-n-node2     |
#   |   DNAT of service VIPs in nftables, forwarding)    |   |                                |
#   |   vxlan0 10.201.0.1 (VNI 42, UDP 4789 over ul0)    |   |   vxlan0 10.201.0.2            |
#   |   ul0 10.200.0.1/24                                |   |   ul0 10.200.0.2/24            |
#   +----|-----------------------------------------------+   +----|---------------------------+
#        | veth n1                                                | veth n2
#   +----|--------------------------------------------------------|---------------------------+
#   |   n1 ------------------------ ul0 (bridge) ---------------- n2 ------ infra            |
#   |                          underlay ns <prefix>-ul                                       |
#   +----------------------------------------------------------------------------|-----------+
#                                                                                | veth
#                          infra ns <prefix>-infra: eth0 10.200.0.254/24, on lo the cluster DNS
#                          address (dnsmasq) and an "external" host address outside the cluster
#
# Pods reach other nodes' pods through VXLAN (the OVS overlay of OpenShift SDN), service VIPs
# through the node's DNAT (kube-proxy), DNS and the external host through the node's default
# route to infra. Each pod has /etc/netns/<pod ns>/resolv.conf (search <project>.svc.cluster.local
# svc.cluster.local cluster.local), which `ip netns exec` mounts over /etc/resolv.conf.
# Addresses: 10.x and fd00::/8 only (the file's ranges must lie inside 10.0.0.0/8 or fd00::/8).
#
# IPv6 (an IPv6-only or a dual-stack file): pods get IPv6 addresses from the node's IPv6
# range (br0 holds its ::1 gateway), services IPv6 VIPs (DNATed like IPv4 ones), the
# cluster DNS answers AAAA and ip6.arpa. The underlay and VXLAN stay IPv4: ul0, vxlan0
# and infra's eth0 carry no IPv6 addresses of their own, only fixed link-local next hops
# (node N fe80::N, infra fe80::ffff), so IPv6 pod traffic between nodes rides the IPv4
# VXLAN (vxlan0's static neighbour entries map fe80::N to node N's MAC, whose forwarding
# entry points at node N's IPv4 underlay address).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=netns-scripts/lib.sh
. "$here/lib.sh"
root=$(cd "$here/.." && pwd)
tool=$root/dist/src/agent/cluster-tool.js
tenc_js=$root/dist/src/cli/main.js
PREFIX=${CLUSTER_PREFIX:-tc}
STATE=${CLUSTER_STATE:-/run/tenc-cluster/$PREFIX}
UL=$PREFIX-ul
INFRA=$PREFIX-infra
UL_MTU=1500
POD_MTU=1450 # VXLAN adds 50 bytes between nodes
VNI=42

die() { echo "cluster.sh: $*" >&2; exit 1; }
log() { [ -n "${QUIET:-}" ] || echo "  $*"; }

[ "$(id -u)" -eq 0 ] || die "must run as root (creates network namespaces)"
[[ $PREFIX =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "CLUSTER_PREFIX must be 1..8 lowercase letters/digits"

need_tools() {
  local t
  for t in ip bridge nft nsenter dnsmasq node; do
    command -v "$t" >/dev/null || die "needs $t: run netns-scripts/deps.sh"
  done
  for t in bridge host-local loopback; do
    [ -x "/usr/lib/cni/$t" ] || die "needs /usr/lib/cni/$t (containernetworking-plugins): run netns-scripts/deps.sh"
  done
  [ -f "$tool" ] || die "$tool missing: run 'npm run build' first"
}

# --- building blocks (one per plan line) -------------------------------------------

mk_ns() {
  ip netns add "$1"
  echo "$1" >>"$STATE/namespaces"
  ns_up "$1"
}

b_underlay() { # NS
  mk_ns "$1"
  ip -n "$1" link add ul0 mtu $UL_MTU type bridge
  ip -n "$1" link set ul0 up
}

# the host prefix length of an address: 32 or 128
hostlen() { case $1 in *:*) echo 128 ;; *) echo 32 ;; esac; }

b_infra() { # NS ADDR/LEN DNS EXTERNAL
  mk_ns "$1"
  veth_into_bridge "$UL" ul0 infra "$1" eth0 $UL_MTU
  ip -n "$1" addr add "$2" dev eth0
  ip -n "$1" addr add "$3/$(hostlen "$3")" dev lo
  ip -n "$1" addr add "$4/$(hostlen "$4")" dev lo
  echo "$3" >"$STATE/dns-address"
  echo "$4" >"$STATE/external-address"
}

b_node() { # NAME NS UL_PORT UL_ADDR/LEN OVERLAY/LEN MAC POD_CIDR GW/LEN INFRA_ADDR
  local ns=$2
  mk_ns "$ns"
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
  veth_into_bridge "$UL" ul0 "$3" "$ns" ul0 $UL_MTU
  ip -n "$ns" addr add "$4" dev ul0
  # A MAC of its own (02:00:0b: and the node's): a bridge without one takes the lowest MAC
  # of its ports and changes it when a pod with a lower one joins; the pods' ARP entries
  # for their gateway then point at the old MAC and their traffic to other nodes stops
  # until the entries expire (15-45 s: the cluster tests' setup stall)
  ip -n "$ns" link add br0 mtu $POD_MTU address "02:00:0b:${6:9}" type bridge
  ip -n "$ns" link set br0 up
  ip -n "$ns" addr add "$8" dev br0
  ip -n "$ns" link add vxlan0 mtu $POD_MTU address "$6" type vxlan id $VNI local "${4%/*}" dstport 4789 nolearning dev ul0
  ip -n "$ns" link set vxlan0 up
  ip -n "$ns" addr add "$5" dev vxlan0
  ip -n "$ns" route add default via "$9" dev ul0
  echo "$1 $ns" >>"$STATE/nodes"
}

b_vxlan_peer() { # NS PEER_OVERLAY PEER_MAC PEER_UL PEER_POD_CIDR|-
  ip -n "$1" neigh add "$2" lladdr "$3" dev vxlan0 nud permanent
  bridge -n "$1" fdb append "$3" dev vxlan0 dst "$4"
  [ "$5" = - ] || ip -n "$1" route add "$5" via "$2" dev vxlan0 onlink
}

b_infra_route() { # POD_CIDR NODE_UL_ADDR
  ip -n "$INFRA" route add "$1" via "$2" dev eth0
}

# --- IPv6 over the IPv4 underlay: link-local next hops only (see the header) ---
b_infra6() { # NS LINK_LOCAL DNS6|- EXTERNAL6|-
  ip -n "$1" addr add "$2/64" dev eth0 nodad
  if [ "$3" != - ]; then ip -n "$1" addr add "$3/128" dev lo; echo "$3" >"$STATE/dns6-address"; fi
  if [ "$4" != - ]; then ip -n "$1" addr add "$4/128" dev lo; echo "$4" >"$STATE/external6-address"; fi
}

b_node6() { # NS LINK_LOCAL GATEWAY6/LEN|- INFRA_LINK_LOCAL
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.forwarding=1
  ip -n "$1" addr add "$2/64" dev ul0 nodad
  ip -n "$1" addr add "$2/64" dev vxlan0 nodad
  [ "$3" = - ] || ip -n "$1" addr add "$3" dev br0 nodad
  ip -n "$1" -6 route add default via "$4" dev ul0
}

b_vxlan_peer6() { # NS PEER_LINK_LOCAL PEER_MAC PEER_POD_CIDR6
  ip -n "$1" -6 neigh add "$2" lladdr "$3" dev vxlan0 nud permanent
  ip -n "$1" -6 route add "$4" via "$2" dev vxlan0
}

b_infra_route6() { # POD_CIDR6 NODE_LINK_LOCAL
  ip -n "$INFRA" -6 route add "$1" via "$2" dev eth0
}

# the runtime's part: the node's CNI chain for the pod, run in the node's namespace
cni() { # ADD|DEL|CHECK POD NODE_NS
  ip netns exec "$3" node "$tool" cni "$1" "$STATE" "$PREFIX" "$2"
}

b_pod() { # NAME NS NODE_NS BRIDGE_PORT ADDR/LEN GW PROJECT DNS [ADDR6/LEN GW6 DNS6]
  local ns=$2
  mk_ns "$ns"
  # the pod's resolv.conf exists before ADD (the agent gives the pod a DNS proxy for it)
  mkdir -p "/etc/netns/$ns"
  {
    printf 'search %s.svc.cluster.local svc.cluster.local cluster.local\nnameserver %s\n' "$7" "$8"
    [ -z "${11:-}" ] || printf 'nameserver %s\n' "${11}"
    printf 'options ndots:5\n'
  } >"/etc/netns/$ns/resolv.conf"
  echo "$1 $3" >>"$STATE/pods"
  cni ADD "$1" "$3" >/dev/null || die "CNI ADD of pod $1 failed"
  log "pod $1 ($7) on ${3#"$PREFIX-n-"}: ${5%/*}${9:+ ${9%/*}} (netns $ns, CNI ADD done)"
}

run_plan_line() {
  local kind=$1
  shift
  case $kind in
    underlay) b_underlay "$@" ;;
    infra) b_infra "$@" ;;
    node) b_node "$@" ;;
    vxlan-peer) b_vxlan_peer "$@" ;;
    infra-route) b_infra_route "$@" ;;
    infra6) b_infra6 "$@" ;;
    node6) b_node6 "$@" ;;
    vxlan-peer6) b_vxlan_peer6 "$@" ;;
    infra-route6) b_infra_route6 "$@" ;;
    pod) b_pod "$@" ;;
    *) die "internal: unknown plan line $kind" ;;
  esac
}

# --- registry backend hook: the directory (default) or etcd (netns-scripts/etcd.sh) ---
etcd_on() { [ -f "$STATE/etcd/spec-controller" ]; }
# kubernetes: the agents read a Kubernetes API (CLUSTER_KUBECONFIGS/<node>.kubeconfig, saved in
# STATE/kubeconfigs by `up`); whoever serves that API feeds it the cluster's objects (the
# netns test: test/k8s/fake-apiserver.ts). The directory registry is still written, unused.
k8s_on() { [ -f "$STATE/kubeconfigs" ]; }
# the cluster tool, where it reaches the registry (etcd: the infra namespace, over the underlay)
registry_tool() { if etcd_on; then ip netns exec "$INFRA" node "$tool" "$@"; else node "$tool" "$@"; fi; }
# NODE's agent: its --registry spec; the command prefix that runs it in its node's namespace NS
agent_registry() { if etcd_on; then cat "$STATE/etcd/spec-$1"; elif k8s_on; then echo "kubernetes:$(cat "$STATE/kubeconfigs")/$1.kubeconfig"; else echo "$STATE/registry"; fi; }
agent_where() { if etcd_on; then echo "ip netns exec $1"; fi; }
# --------------------------------------------------------------------------------------

# registry objects, kube-proxy rules on every node, DNS records (after any change)
sync_cluster() {
  local name ns
  registry_tool sync "$STATE" "$PREFIX" >/dev/null
  while read -r name ns; do
    ip netns exec "$ns" nft -f "$STATE/kube.nft"
  done <"$STATE/nodes"
  if [ -f "$STATE/dnsmasq.pid" ]; then kill -HUP "$(cat "$STATE/dnsmasq.pid")" 2>/dev/null || true; fi
}

start_dns() {
  local listen
  listen=$(cat "$STATE/dns-address")
  if [ -f "$STATE/dns6-address" ]; then listen=$listen,$(cat "$STATE/dns6-address"); fi
  # d.f.ip6.arpa: the reverse names of fd00::/8, answered from the records (NXDOMAIN
  # for the rest), as --bogus-priv does for the private IPv4 ranges
  ip netns exec "$INFRA" dnsmasq --conf-file=/dev/null --no-resolv --no-hosts --addn-hosts="$STATE/dns.hosts" \
    --listen-address="$listen" --bind-interfaces --local=/cluster.local/ --local=/d.f.ip6.arpa/ --domain-needed --bogus-priv \
    --user=root --group=root --pid-file="$STATE/dnsmasq.pid" --log-facility="$STATE/dnsmasq.log" ||
    die "dnsmasq failed to start (see $STATE/dnsmasq.log)"
  local i
  for i in $(seq 50); do [ -s "$STATE/dnsmasq.pid" ] && return 0; sleep 0.1; done
  die "dnsmasq did not start (see $STATE/dnsmasq.log)"
}

remove_ns() {
  ns_remove "$1"
  rm -rf "/etc/netns/$1"
}

# a process that exists and is not a zombie (a killed agent nobody reaped yet is not alive)
alive() {
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $st != Z* ]]
}

stop_pidfile() { # FILE: TERM, up to 5 s, then KILL
  local f=$1 pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if alive "$pid" && kill -TERM "$pid" 2>/dev/null; then
    for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# --- commands --------------------------------------------------------------------

up() {
  local file=$1 registry=${2:-dir} plan line p
  need_tools
  [ ! -e "$STATE" ] || die "a cluster with prefix $PREFIX is up ($STATE exists): run 'cluster.sh down' first"
  # validate first: an invalid file builds nothing
  plan=$(node "$tool" plan "$file" "" "$PREFIX") || exit 2
  while read -r p; do
    [ -z "$p" ] || [ ! -e "/run/netns/$p" ] || die "network namespace $p exists already (another cluster with prefix $PREFIX?)"
  done < <(printf '%s\n' "$plan" | awk '$1 == "underlay" || $1 == "infra" {print $2} $1 == "node" || $1 == "pod" {print $3}')
  [ -d /run/tenc-cluster ] || { mkdir -m 0700 /run/tenc-cluster; }
  mkdir -m 0700 "$STATE"
  [ -d /etc/netns ] || { mkdir /etc/netns; touch "$STATE/created-etc-netns"; }
  [ -d /run/tenc ] || touch "$STATE/created-run-tenc" # the pods' control sockets go there
  : >"$STATE/namespaces"
  : >"$STATE/nodes"
  : >"$STATE/pods"
  trap 'echo "cluster.sh: up failed, removing what was built" >&2; QUIET=1 down' EXIT
  node "$tool" plan "$file" "$STATE" "$PREFIX" >/dev/null
  echo "cluster $PREFIX from $file (state in $STATE):"
  # nodes first, then the registry, CNI config and agents, then the pods through CNI
  while read -r line; do
    # shellcheck disable=SC2086
    [ "${line%% *}" = pod ] || run_plan_line $line
  done <<<"$plan"
  mkdir -m 0700 "$STATE/psk" "$STATE/agents"
  if [ "$registry" = etcd ]; then bash "$here/etcd.sh" start; fi
  if [ "$registry" = kubernetes ]; then
    [ -d "${CLUSTER_KUBECONFIGS:-}" ] || die "--registry kubernetes needs CLUSTER_KUBECONFIGS=DIR (DIR/<node>.kubeconfig for each node)"
    echo "$CLUSTER_KUBECONFIGS" >"$STATE/kubeconfigs"
  fi
  projects=$(registry_tool sync "$STATE" "$PREFIX")
  for p in $projects; do
    (umask 077 && node "$tenc_js" genpsk >"$STATE/psk/$p")
  done
  echo "${CLUSTER_PROTECT:-$(echo $projects | tr ' ' ',')}" >"$STATE/protect"
  sync_cluster
  node "$tool" conflists "$STATE"
  # tenc's plugin: the static C binary a real node puts in /opt/cni/bin (cni/build.sh), not Node;
  # built into build/cni/ when missing or older than its sources (about 0.6 s), then copied
  local cni_bin=$root/build/cni/tenc-cni
  if [ ! -x "$cni_bin" ] || [ "$root/cni/tenc-cni.c" -nt "$cni_bin" ] || [ "$root/cni/build.sh" -nt "$cni_bin" ]; then
    sh "$root/cni/build.sh" "$cni_bin" || die "building the CNI plugin with cni/build.sh failed (needs cc and the static libc: libc6-dev)"
  fi
  cp -f "$cni_bin" "$STATE/cni/bin/tenc"
  chmod 0700 "$STATE/cni/bin/tenc"
  start_dns
  agent_start
  while read -r line; do
    # shellcheck disable=SC2086
    [ "${line%% *}" != pod ] || run_plan_line $line
  done <<<"$plan"
  trap - EXIT
  log "services: kube-proxy DNAT on every node; DNS $(cat "$STATE/dns-address") (dnsmasq in $INFRA)"
  if etcd_on; then log "registry: etcd ($(cat "$STATE/etcd/spec-controller" | cut -d'?' -f1)), etcdctl: netns-scripts/etcd.sh ctl"; else log "registry: $STATE/registry"; fi
}

down() {
  local f ns
  if [ ! -d "$STATE" ]; then
    log "no cluster with prefix $PREFIX"
    return 0
  fi
  # CNI DEL of every pod while the agents run (the runtime's sandbox teardown)
  if [ -f "$STATE/pods" ] && [ -f "$STATE/cluster.json" ]; then
    while read -r name ns; do
      [ -n "$name" ] && { cni DEL "$name" "$ns" >/dev/null 2>&1 || log "CNI DEL of $name failed (namespace removed anyway)"; }
    done < <(tac "$STATE/pods")
  fi
  for f in "$STATE"/agents/*.pid; do [ -e "$f" ] && stop_pidfile "$f"; done
  # the agents' pod hosts run on without them (their pods' proxies): stopped here
  hosts_stop "$STATE/agents"
  stop_pidfile "$STATE/dnsmasq.pid"
  if [ -d "$STATE/etcd" ]; then QUIET=1 bash "$here/etcd.sh" stop || true; fi
  if [ -f "$STATE/namespaces" ]; then
    # pods first, the underlay last
    while read -r ns; do
      [ -n "$ns" ] && remove_ns "$ns"
    done < <(tac "$STATE/namespaces")
  fi
  if [ -f "$STATE/created-etc-netns" ]; then rmdir /etc/netns 2>/dev/null || true; fi
  if [ -f "$STATE/created-run-tenc" ]; then rmdir /run/tenc 2>/dev/null || true; fi
  rm -rf "$STATE"
  rmdir /run/tenc-cluster 2>/dev/null || true
  log "cluster $PREFIX removed"
}

status() {
  local ns name
  [ -d "$STATE" ] || { echo "no cluster with prefix $PREFIX"; return 0; }
  echo "cluster $PREFIX (state $STATE)"
  while read -r name ns; do
    echo "== node $name ($ns)"
    ip -n "$ns" -br addr | sed 's/^/   /'
  done <"$STATE/nodes"
  echo "== pods"
  while read -r ns; do
    case $ns in "$UL" | "$INFRA" | "$PREFIX"-n-*) continue ;; esac
    printf '   %-28s %s\n' "$ns" "$(ip -n "$ns" -br addr show dev eth0 2>/dev/null | tr ' ' '\n' | grep / | grep -v '^fe80' | tr '\n' ' ')"
  done <"$STATE/namespaces"
  echo "== DNS records (dnsmasq pid $(cat "$STATE/dnsmasq.pid" 2>/dev/null || echo none))"
  sed 's/^/   /' "$STATE/dns.hosts"
  echo "== agents"
  for f in "$STATE"/agents/*.pid; do
    [ -e "$f" ] || continue
    if alive "$(cat "$f")"; then echo "   $(basename "$f" .pid) running (pid $(cat "$f"))"; else echo "   $(basename "$f" .pid) dead"; fi
  done
}

add_pod() {
  local line
  [ -d "$STATE" ] || die "no cluster with prefix $PREFIX"
  line=$(node "$tool" add-pod "$STATE" "$PREFIX" "$1") || exit 2
  # the pod is in cluster.json now: any failure from here on (its CNI ADD refused while the
  # agent is down, ...) takes back everything add-pod did
  # shellcheck disable=SC2086
  trap "add_pod_undo $(printf '%q ' $line)" EXIT
  sync_cluster
  # shellcheck disable=SC2086
  run_plan_line $line
  trap - EXIT
}

# add_pod_undo pod NAME NS NODE_NS ...: the EXIT trap of a failed add-pod (its plan line);
# undoes, newest first: the runtime's DEL through the node's chain (UNDO: every plugin even
# when tenc's fails, its agent down, so the bridge releases the pod's address), the
# namespace and /etc/netns/NS, the pod's lines in STATE/pods and STATE/namespaces, its entry
# in cluster.json and, by a sync, its registry objects, kube-proxy rules and DNS records.
# Keeps the failure's exit code.
add_pod_undo() {
  local name=$2 ns=$3 node_ns=$4
  trap - EXIT
  echo "cluster.sh: add-pod of $name failed: removing what it made" >&2
  if [ -e "/run/netns/$ns" ]; then
    ip netns exec "$node_ns" node "$tool" cni UNDO "$STATE" "$PREFIX" "$name" >/dev/null 2>&1 || echo "cluster.sh: CNI DEL of $name failed (its namespace is removed anyway)" >&2
  fi
  remove_ns "$ns" || true
  if grep -qx -- "$ns" "$STATE/namespaces"; then
    grep -vx -- "$ns" "$STATE/namespaces" >"$STATE/namespaces.new" || true
    mv "$STATE/namespaces.new" "$STATE/namespaces"
  fi
  awk -v p="$name" '$1 != p' "$STATE/pods" >"$STATE/pods.new" && mv "$STATE/pods.new" "$STATE/pods" || true
  node "$tool" remove-pod "$STATE" "$PREFIX" "$name" >/dev/null || echo "cluster.sh: $name is still in $STATE/cluster.json" >&2
  sync_cluster || echo "cluster.sh: the registry, kube-proxy rules or DNS records may still hold $name: run add-pod or remove-pod again" >&2
}

policy_apply() {
  [ -d "$STATE" ] || die "no cluster with prefix $PREFIX"
  node "$tool" apply-policy "$STATE" "$1" || exit 2
  sync_cluster
}

policy_delete() {
  [ -d "$STATE" ] || die "no cluster with prefix $PREFIX"
  node "$tool" delete-policy "$STATE" "$1" "$2" || exit 2
  sync_cluster
}

remove_pod() {
  local ns
  [ -d "$STATE" ] || die "no cluster with prefix $PREFIX"
  local node_ns
  node_ns=$(awk -v p="$1" '$1 == p {print $2}' "$STATE/pods")
  [ -n "$node_ns" ] || die "no pod $1"
  cni DEL "$1" "$node_ns" || die "CNI DEL of pod $1 failed (pod kept: retry)"
  ns=$(node "$tool" remove-pod "$STATE" "$PREFIX" "$1") || exit 2
  remove_ns "$ns"
  grep -vx -- "$ns" "$STATE/namespaces" >"$STATE/namespaces.new" || true
  mv "$STATE/namespaces.new" "$STATE/namespaces"
  awk -v p="$1" '$1 != p' "$STATE/pods" >"$STATE/pods.new"
  mv "$STATE/pods.new" "$STATE/pods"
  sync_cluster
  log "pod $1 removed"
}

# one node agent per node, for the projects in STATE/protect; waits for its node socket
agent_start() {
  local name ns f ranges i n=0 metrics
  [ -d "$STATE" ] || die "no cluster with prefix $PREFIX"
  # the pod and service ranges: guarded from each pod's start, classified on first use
  ranges=$(node "$tool" classify-cidrs "$STATE") || die "cannot read the cluster's ranges"
  while read -r name ns; do
    f=$STATE/agents/$name
    metrics=${CLUSTER_METRICS_PORT:+127.0.0.1:$((CLUSTER_METRICS_PORT + n))}
    n=$((n + 1))
    if [ -f "$f.pid" ] && alive "$(cat "$f.pid")"; then continue; fi
    rm -f "$f.sock" # a killed agent's socket: wait for the new agent's, not this one
    # shellcheck disable=SC2046
    setsid $(agent_where "$ns") node "$tenc_js" agent --registry "$(agent_registry "$name")" --node "$name" --project "$(cat "$STATE/protect")" \
      --socket "$f.sock" --classify-cidrs "$ranges" --run-dir "$f.run" ${metrics:+--metrics-address "$metrics"} >>"$f.log" 2>&1 </dev/null &
    echo $! >"$f.pid"
    for i in $(seq 200); do [ -S "$f.sock" ] && break; alive "$(cat "$f.pid")" || break; sleep 0.05; done
    [ -S "$f.sock" ] || die "agent on $name did not start (see $f.log)"
    log "agent on $name for $(cat "$STATE/protect"): pid $(cat "$f.pid") (socket $f.sock, log $f.log)"
  done <"$STATE/nodes"
}

agent_stop() {
  local f
  for f in "$STATE"/agents/*.pid; do [ -e "$f" ] && stop_pidfile "$f"; done
  return 0
}

case "${1:-}" in
  up)
    if [ $# -eq 2 ]; then up "$2"
    elif [ $# -eq 4 ] && [ "$3" = --registry ] && [[ $4 =~ ^(dir|etcd|kubernetes)$ ]]; then up "$2" "$4"
    else die "usage: cluster.sh up FILE [--registry dir|etcd|kubernetes]"; fi
    ;;
  down) down ;;
  status) status ;;
  add-pod) [ $# -eq 2 ] || die "usage: cluster.sh add-pod JSON"; add_pod "$2" ;;
  remove-pod) [ $# -eq 2 ] || die "usage: cluster.sh remove-pod NAME"; remove_pod "$2" ;;
  policy-apply) [ $# -eq 2 ] || die "usage: cluster.sh policy-apply JSON"; policy_apply "$2" ;;
  policy-delete) [ $# -eq 3 ] || die "usage: cluster.sh policy-delete PROJECT NAME"; policy_delete "$2" "$3" ;;
  agent-start) [ $# -eq 1 ] || die "usage: cluster.sh agent-start"; agent_start ;;
  agent-stop) [ $# -eq 1 ] || die "usage: cluster.sh agent-stop"; agent_stop ;;
  cni)
    [ $# -eq 3 ] || die "usage: cluster.sh cni ADD|DEL|CHECK POD"
    [ -d "$STATE" ] || die "no cluster with prefix $PREFIX"
    cni "$2" "$3" "$(awk -v p="$3" '$1 == p {print $2}' "$STATE/pods")"
    ;;
  *)
    echo "usage: cluster.sh up FILE [--registry dir|etcd|kubernetes] | down | status | add-pod JSON | remove-pod NAME | policy-apply JSON | policy-delete PROJECT NAME | agent-start | agent-stop | cni ADD|DEL|CHECK POD" >&2
    echo "       (env: CLUSTER_PREFIX=tc, CLUSTER_STATE=/run/tenc-cluster/<prefix>)" >&2
    exit 2
    ;;
esac
