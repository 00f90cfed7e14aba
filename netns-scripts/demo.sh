#!/usr/bin/env bash
# tenc demo: a small cluster (2 nodes, 2 projects, 6 pods, 3 services) made of network
# namespaces, every pod made through the CNI chain (bridge + host-local, loopback, tenc:
# alpha's pods are fail-closed before their first packet), `tenc agent` on each node
# protecting alpha, and captures on a node's
# bridge and on the underlay that prove what an eavesdropper there sees.
#
#   netns-scripts/demo.sh        (as root; `npm run demo` builds first and runs this)
#
#   node1: alpha-web-1 (web.alpha)  alpha-client-1  beta-web-1 (web.beta)
#   node2: alpha-db-1 (db.alpha)    alpha-client-2  beta-client-1
#   nodes joined by VXLAN over the (IPv4) underlay; service VIPs DNATed on the nodes;
#   cluster DNS (dnsmasq) answers <service>.<project>.svc.cluster.local (A and AAAA)
#   dual stack: every pod has an IPv4 and an IPv6 address, every service two VIPs
#
# Steps: build the cluster (cluster.sh up netns-scripts/cluster-example-dual.json), start
# an HTTP server in alpha-web-1, alpha-db-1, beta-web-1 and outside the cluster, wait
# for the agents (started by `up` before the pods; CNI ADD had them run each alpha pod's
# proxy, in the node's pod host for alpha: README "Pod host") to give every pod its peers and services, then send a secret marker between alpha pods by service name, within
# a node and across nodes, over IPv4 and over IPv6, while tcpdump records node1's bridge and the underlay;
# send a public marker to beta's service and outside, which must stay untouched; show
# enforcement dropping plaintext from a spoofed alpha address; tear everything down.
# Each step prints PROVED or FAILED; the exit code is 0 only when all are proved.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
tenc_js=$root/dist/src/cli/main.js
export CLUSTER_PREFIX=${CLUSTER_PREFIX:-tc}
P=$CLUSTER_PREFIX
PORT=51820

[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 1; }
[ -f "$tenc_js" ] || { echo "demo: $tenc_js missing: run 'npm ci' (or 'npm run build') first" >&2; exit 1; }
bash "$here/deps.sh"

work=$(mktemp -d /tmp/tenc-demo.XXXXXX)
chmod 700 "$work"
pids=()
failed=0

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ok() { printf '  \033[32mPROVED\033[0m %s\n' "$*"; }
bad() { printf '  \033[31mFAILED\033[0m %s\n' "$*"; failed=1; }
in_pod() { local pod=$1; shift; ip netns exec "$P-$pod" "$@"; }
tenc_in() { local pod=$1; shift; in_pod "$pod" node "$tenc_js" "$@"; }

cleanup() {
  set +e
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  bash "$here/cluster.sh" down >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "1. the cluster (netns-scripts/cluster.sh up netns-scripts/cluster-example-dual.json; alpha protected)"
bash "$here/cluster.sh" down >/dev/null 2>&1 || true
CLUSTER_PROTECT=alpha bash "$here/cluster.sh" up "$here/cluster-example-dual.json"
secret="TENC-DEMO-SECRET-$RANDOM$RANDOM"
public="TENC-DEMO-PUBLIC-$RANDOM$RANDOM"
echo "  secret marker (alpha's project traffic): $secret"
echo "  public marker (traffic to beta and outside): $public"

say "2. servers in the pods and outside the cluster"
serve() { # netns port name
  ip netns exec "$1" node -e "
    require('http').createServer((q, r) => { let b = ''; q.on('data', (d) => (b += d)); q.on('end', () => r.end('$3 got: ' + b)); })
      .listen($2);" &
  pids+=($!)
}
serve "$P-alpha-web-1" 80 alpha-web-1
serve "$P-alpha-db-1" 5432 alpha-db-1
serve "$P-beta-web-1" 80 beta-web-1
serve "$P-infra" 8080 external
echo "  web.alpha (alpha-web-1, node1)  db.alpha:5432 (alpha-db-1, node2)  web.beta (beta-web-1, node1)  10.250.0.1:8080 (outside)"

say "3. tenc agent on each node (CNI ADD of each alpha pod returned once its proxy was fail-closed)"
ready=0
for _ in $(seq 150); do
  n=0
  for pod in alpha-web-1 alpha-client-1 alpha-db-1 alpha-client-2; do
    c=$(tenc_in "$pod" status --json 2>/dev/null | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{try{console.log(JSON.parse(s).peers.length)}catch{console.log(0)}})" || true)
    [ "$c" = 3 ] && n=$((n + 1))
  done
  [ $n -eq 4 ] && { ready=1; break; }
  sleep 0.2
done
if [ $ready -eq 1 ]; then ok "a tenc pod proxy serves each of alpha's 4 pods (one pod host per node), each knows the other 3 (public keys through the registry)"
else bad "alpha's pods did not get their peers in 30 s"; fi
echo "  registry: $(cd /run/tenc-cluster/$P/registry/peers/alpha && ls */ | tr '\n' ' ')"
echo "  names: alpha-client-1's DNS proxy answers alpha's services with their endpoint pods, other names pass unchanged:"
in_pod alpha-client-1 getent hosts web.alpha.svc.cluster.local db.alpha.svc.cluster.local web.beta.svc.cluster.local | sed 's/^/    /'
echo "  alpha-client-1 routes:"
in_pod alpha-client-1 ip route get 10.96.1.10 | sed -n '1s/^/    web.alpha VIP   -> /p'
in_pod alpha-client-1 ip route get 10.128.1.20 | sed -n '1s/^/    beta-web-1      -> /p'
echo "    (the pod and service ranges go into tenc0 until an address is classified: tenc agent --classify-cidrs)"

say "4. traffic while tcpdump records node1's bridge and the underlay"
ip netns exec "$P-n-node1" tcpdump -i br0 -nn -U -w "$work/bridge.pcap" --immediate-mode 2>/dev/null &
pids+=($!); cap1=$!
ip netns exec "$P-ul" tcpdump -i ul0 -nn -U -w "$work/underlay.pcap" --immediate-mode 2>/dev/null &
pids+=($!); cap2=$!
sleep 1
check_http() { # pod url body expected what [-4 (default) or -6]
  local reply
  reply=$(in_pod "$1" curl "${6:--4}" -g -s -m 5 --data "$3" "$2" || true)
  if [ "$reply" = "$4" ]; then ok "$5"; else bad "$5 (got '$reply')"; fi
}
check_http alpha-client-1 http://web/ "$secret" "alpha-web-1 got: $secret" \
  "alpha-client-1 -> http://web/ (web.alpha.svc.cluster.local), within node1, through tenc"
check_http alpha-client-1 http://db:5432/ "$secret" "alpha-db-1 got: $secret" \
  "alpha-client-1 -> http://db:5432/, node1 -> node2 over VXLAN, through tenc"
check_http alpha-client-2 http://web.alpha/ "$secret" "alpha-web-1 got: $secret" \
  "alpha-client-2 -> http://web.alpha/, node2 -> node1, through tenc"
check_http alpha-client-1 http://web/ "$secret" "alpha-web-1 got: $secret" \
  "alpha-client-1 -> http://web/ over IPv6 (AAAA: alpha-web-1's fd00:128:1::a), within node1, through tenc" -6
check_http alpha-client-1 http://db:5432/ "$secret" "alpha-db-1 got: $secret" \
  "alpha-client-1 -> http://db:5432/ over IPv6, node1 -> node2 over the IPv4 VXLAN, through tenc" -6
check_http alpha-client-2 "http://[fd00:96::1:10]/" "$secret" "alpha-web-1 got: $secret" \
  "alpha-client-2 -> web.alpha's IPv6 VIP fd00:96::1:10, node2 -> node1, through tenc" -6
check_http alpha-client-1 http://web.beta/ "$public" "beta-web-1 got: $public" \
  "alpha-client-1 -> http://web.beta/ (another project): works, via the node's DNAT, not tunnelled"
check_http alpha-client-1 http://10.250.0.1:8080/ "$public" "external got: $public" \
  "alpha-client-1 -> 10.250.0.1:8080 (outside the cluster): works, not tunnelled"
check_http beta-client-1 http://web/ "$public" "beta-web-1 got: $public" \
  "beta-client-1 -> http://web/ (web.beta, beta not protected): untouched"
check_http alpha-client-1 http://10.128.1.20/ "$public" "beta-web-1 got: $public" \
  "alpha-client-1 -> http://10.128.1.20/ (beta-web-1 by raw IP, not learned through DNS): classified on first use (PTR in beta), bypassed, not tunnelled"
check_http alpha-client-1 "http://[fd00:250::1]:8080/" "$public" "external got: $public" \
  "alpha-client-1 -> [fd00:250::1]:8080 (outside the cluster, IPv6): works, not tunnelled" -6
echo "  alpha-client-1 route to beta-web-1 after first use: $(in_pod alpha-client-1 ip route get 10.128.1.20 | head -1)"
sleep 0.5
kill -INT "$cap1" "$cap2" 2>/dev/null || true
wait "$cap1" "$cap2" 2>/dev/null || true

say "5. what node1's bridge and the underlay saw"
alpha="host 10.128.1.10 or host 10.128.1.11 or host 10.128.2.10 or host 10.128.2.11"
count() { tcpdump -r "$1" -nn "$2" 2>/dev/null | wc -l; }
tun=$(count "$work/bridge.pcap" "($alpha) and udp port $PORT")
clear=$(count "$work/bridge.pcap" "($alpha) and not udp port $PORT and not udp port 53 and not arp and not host 10.128.1.20 and not host 10.250.0.1")
echo "  node1 bridge: alpha pod to alpha pod: tenc UDP/$PORT packets $tun, anything else $clear (DNS to the cluster DNS is not counted)"
if [ "$tun" -gt 0 ] && [ "$clear" -eq 0 ]; then ok "between alpha pods node1's bridge carried only tenc's UDP datagrams"
else bad "plaintext between alpha pods on the bridge"; fi
# tcpdump prints each VXLAN packet as two lines: the outer header, then the inner packet
a_ip='10\.128\.(1\.1[01]|2\.1[01])'
inner=$(tcpdump -r "$work/underlay.pcap" -nn 'udp port 4789' 2>/dev/null | grep -v VXLAN | grep -E "IP $a_ip\.[0-9]+ > $a_ip\.[0-9]+" || true)
vx_tenc=$(printf '%s\n' "$inner" | grep -c "\.$PORT > .*\.$PORT: UDP" || true)
vx_other=$(printf '%s\n' "$inner" | grep -v "\.$PORT > .*\.$PORT: UDP" | grep -vc '^$' || true)
echo "  underlay: VXLAN packets between alpha pods on different nodes: inner tenc UDP $vx_tenc, inner anything else $vx_other"
{ printf '%s\n' "$inner" | sed -n '1,2s/^/    inner: /p'; } || true
if [ "$vx_tenc" -gt 0 ] && [ "$vx_other" -eq 0 ]; then ok "the underlay carried alpha's traffic between the nodes only as tenc UDP inside VXLAN"
else bad "unexpected inner packets on the underlay"; fi
# IPv6 between alpha pods: the tunnel's outer packets are IPv4 (the pods' primary
# addresses), so no IPv6 packet between alpha pods may appear but neighbour discovery
alpha6="host fd00:128:1::a or host fd00:128:1::b or host fd00:128:2::a or host fd00:128:2::b"
clear6=$(count "$work/bridge.pcap" "ip6 and ($alpha6) and not udp port 53 and not host fd00:250::1 and not (icmp6 and (ip6[40] == 135 or ip6[40] == 136))")
a6_ip='fd00:128:[12]::[ab]'
inner6=$(tcpdump -r "$work/underlay.pcap" -nn 'udp port 4789' 2>/dev/null | grep -v VXLAN | grep -cE "IP6 $a6_ip\.[0-9]+ > $a6_ip\." || true)
echo "  IPv6 between alpha pods: in the clear on node1's bridge $clear6 packets (neighbour discovery not counted), inside VXLAN on the underlay $inner6"
if [ "$clear6" -eq 0 ] && [ "$inner6" -eq 0 ] && [ "$tun" -gt 0 ]; then ok "alpha's IPv6 traffic crossed node1's bridge and the underlay only inside tenc's UDP datagrams, like IPv4"
else bad "IPv6 between alpha pods in the clear on the bridge or the underlay"; fi
if grep -a -q "$secret" "$work/bridge.pcap" "$work/underlay.pcap"; then bad "the secret marker appears in a capture"
else ok "the secret marker never appears in either capture ($(cat "$work/bridge.pcap" "$work/underlay.pcap" | wc -c) bytes searched)"; fi
if grep -a -q "$public" "$work/bridge.pcap"; then ok "the public marker is in the clear on the bridge: traffic to other projects and outside is left alone"
else bad "the public marker is missing from the bridge capture"; fi

say "6. bulk TCP through the tunnel across nodes (after the captures, to keep them small)"
in_pod alpha-db-1 iperf3 -s -1 -B 10.128.2.10 >/dev/null 2>&1 &
pids+=($!)
sleep 0.5
if in_pod alpha-client-1 iperf3 -c 10.128.2.10 -t 3 -J >"$work/iperf.json" 2>&1; then
  gbps=$(node -e "const j=require('$work/iperf.json'); console.log((j.end.sum_received.bits_per_second/1e9).toFixed(2))")
  ok "TCP (iperf3, 3 s, one stream) alpha-client-1 (node1) -> alpha-db-1 (node2): $gbps Gbit/s through tenc and VXLAN"
else bad "iperf3 alpha-client-1 -> alpha-db-1"; tail -5 "$work/iperf.json"; fi

say "7. enforcement: plaintext from a beta pod that spoofs an alpha pod's address"
before=$(tenc_in alpha-db-1 status --json | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).drops.plaintext_from_project||0))")
in_pod beta-client-1 ip addr add 10.128.2.11/32 dev eth0
if in_pod beta-client-1 curl -s -m 2 --interface 10.128.2.11 --data "$secret" http://10.128.2.10:5432/ >/dev/null; then spoof=1; else spoof=0; fi
in_pod beta-client-1 ip addr del 10.128.2.11/32 dev eth0
after=$(tenc_in alpha-db-1 status --json | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).drops.plaintext_from_project||0))")
if [ $spoof -eq 0 ] && [ "$after" -gt "$before" ]; then ok "beta-client-1 posing as alpha-client-2 (10.128.2.11) got nothing; alpha-db-1 dropped $((after - before)) packets (plaintext_from_project)"
else bad "spoofed plaintext was not dropped (curl ok=$spoof, drops $before -> $after)"; fi

say "8. tenc status in alpha-client-1 (ip netns exec $P-alpha-client-1 tenc status)"
tenc_in alpha-client-1 status | sed 's/^/    /'

say "9. teardown (cluster.sh down)"
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
pids=()
bash "$here/cluster.sh" down
trap - EXIT
rm -rf "$work"
if ip netns list | grep -q "^$P-" || [ -e "/run/tenc-cluster/$P" ]; then bad "namespaces or state left behind"
else ok "agents, pod proxies, dnsmasq, namespaces and state removed"; fi
if [ $failed -ne 0 ]; then echo; echo "demo: some steps FAILED (see above)"; exit 1; fi
echo; echo "demo: all steps proved."
