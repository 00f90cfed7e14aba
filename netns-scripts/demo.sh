#!/usr/bin/env bash
# tenc demo: two pods on one node, their project traffic through tenc, and a capture
# on the node's bridge that proves what an eavesdropper there sees.
#
#   netns-scripts/demo.sh        (as root; `npm run demo` builds first and runs this)
#
#  +--------------------------+                      +--------------------------+
#  |  netns tenc-a  (pod a)   |                      |  netns tenc-b  (pod b)   |
#  |  app --> tenc0 (tenc pod)|                      |(tenc pod) tenc0 --> app  |
#  |  eth0 10.77.0.1          |                      |          eth0 10.77.0.2  |
#  +-----------|--------------+                      +--------------|-----------+
#              |                 UDP 51820 only                     |
#  +-----------|----------------------------------------------------|-----------+
#  |         veth-a -------------------- br0 -------------------- veth-b        |
#  |                 netns tenc-br  (node)   <- tcpdump here                    |
#  +----------------------------------------------------------------------------+
#
# Steps: build the pods (pods.sh), start `tenc pod` in each pod's namespace from the
# host with nsenter (the pods get no capability and no new image), exchange public keys
# with `tenc set-peer`, then ping, TCP (iperf3 and HTTP) and UDP between the pods while
# tcpdump records the bridge. Everything is torn down at the end, also on failure.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
tenc_js=$root/dist/src/cli/main.js
export PODS_PREFIX=${PODS_PREFIX:-tenc}
NS_A=$PODS_PREFIX-a
NS_B=$PODS_PREFIX-b
NS_BR=$PODS_PREFIX-br
A=10.77.0.1
B=10.77.0.2
A6=fd00:77::1
B6=fd00:77::2
PORT=51820

[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (it creates network namespaces)" >&2; exit 1; }
[ -f "$tenc_js" ] || { echo "demo.sh: $tenc_js missing: run 'npm ci' (or 'npm run build') first" >&2; exit 1; }
bash "$here/deps.sh"

work=$(mktemp -d /tmp/tenc-demo.XXXXXX)
chmod 700 "$work"
pids=()
failed=0

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ok() { printf '  \033[32mPROVED\033[0m %s\n' "$*"; }
bad() { printf '  \033[31mFAILED\033[0m %s\n' "$*"; failed=1; }
in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" -- "$@"; }
tenc_in() { local ns=$1; shift; in_ns "$ns" node "$tenc_js" "$@"; }

cleanup() {
  set +e
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  bash "$here/pods.sh" down >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "1. two pods on a bridge (netns-scripts/pods.sh up)"
bash "$here/pods.sh" down >/dev/null 2>&1 || true
bash "$here/pods.sh" up
marker="TENC-DEMO-SECRET-$RANDOM$RANDOM"
echo "  marker text the apps will send: $marker"

say "2. tenc pod in each pod's namespace, started from the host with nsenter"
node "$tenc_js" genpsk >"$work/psk"
for x in a b; do
  if [ $x = a ]; then addr=$A; addr6=$A6; else addr=$B; addr6=$B6; fi
  cat >"$work/$x.json" <<EOF
{ "addresses": ["$addr", "$addr6"], "listenPort": $PORT, "pskFile": "psk", "logLevel": "warn" }
EOF
done
start_pod() { # ns config out
  nsenter --net="/run/netns/$1" -- node "$tenc_js" pod --config "$2" >"$3" 2>"$3.log" &
  pids+=($!)
  for _ in $(seq 100); do
    grep -q '^public-key ' "$3" 2>/dev/null && { sleep 0.3; return 0; }
    sleep 0.1
  done
  echo "tenc pod in $1 did not start:" >&2
  cat "$3.log" >&2
  exit 1
}
start_pod "$NS_A" "$work/a.json" "$work/a.out"
start_pod "$NS_B" "$work/b.json" "$work/b.out"
pub_a=$(sed -n 's/^public-key //p' "$work/a.out")
pub_b=$(sed -n 's/^public-key //p' "$work/b.out")
echo "  pod a public key $pub_a (private key only in tenc's memory)"
echo "  pod b public key $pub_b"
tenc_in "$NS_A" set-peer "$pub_b" --endpoint "$B:$PORT" --allowed-ips "$B/32,$B6/128"
tenc_in "$NS_B" set-peer "$pub_a" --endpoint "$A:$PORT" --allowed-ips "$A/32,$A6/128"
echo "  pod a routes project destinations to tenc0:"
in_ns "$NS_A" ip route get "$B" | sed 's/^/    /'
in_ns "$NS_A" ip -6 route get "$B6" | sed 's/^/    /'

say "3. traffic between the pods while tcpdump records the node's bridge"
ip netns exec "$NS_BR" tcpdump -i br0 -nn -U -w "$work/bridge.pcap" --immediate-mode 2>/dev/null &
pids+=($!)
tcpdump_pid=$!
sleep 1
# HTTP server in pod b that answers with the marker; UDP receiver in pod b
in_ns "$NS_B" node -e "
  require('http').createServer((q, r) => { let b=''; q.on('data', d => b += d); q.on('end', () => r.end('pod b got: ' + b)); })
    .listen(8080, '::');
  const u = require('dgram').createSocket('udp4');
  u.on('message', (m, ri) => require('fs').appendFileSync('$work/udp.txt', m + '\n')).bind(9999, '$B');
" &
pids+=($!)
in_ns "$NS_B" iperf3 -s -1 -B "$B" >/dev/null 2>&1 &
pids+=($!)
sleep 0.7

if in_ns "$NS_A" ping -c 3 -i 0.2 -W 2 "$B" >"$work/ping4" 2>&1; then
  ok "ping pod a -> pod b over IPv4 ($(grep -o 'rtt.*' "$work/ping4"))"
else bad "ping a -> b IPv4"; cat "$work/ping4"; fi
if in_ns "$NS_B" ping -c 3 -i 0.2 -W 2 "$A6" >"$work/ping6" 2>&1; then
  ok "ping pod b -> pod a over IPv6 ($(grep -o 'rtt.*' "$work/ping6"))"
else bad "ping b -> a IPv6"; cat "$work/ping6"; fi
reply=$(in_ns "$NS_A" curl -s -m 5 --data "$marker" "http://$B:8080/" || true)
if [ "$reply" = "pod b got: $marker" ]; then ok "HTTP POST of the marker from pod a to pod b's server, answer echoed back"
else bad "HTTP a -> b (got '$reply')"; fi
reply6=$(in_ns "$NS_A" curl -s -m 5 --data "$marker-v6" "http://[$B6]:8080/" || true)
if [ "$reply6" = "pod b got: $marker-v6" ]; then ok "HTTP over IPv6 inside the tunnel"
else bad "HTTP a -> b IPv6 (got '$reply6')"; fi
in_ns "$NS_A" node -e "
  const s = require('dgram').createSocket('udp4');
  s.send('$marker-udp', 9999, '$B', () => s.close());"
sleep 0.5
if grep -q "$marker-udp" "$work/udp.txt" 2>/dev/null; then ok "UDP datagram with the marker arrived in pod b"
else bad "UDP a -> b"; fi
sleep 0.5
kill -INT "$tcpdump_pid" 2>/dev/null || true
wait "$tcpdump_pid" 2>/dev/null || true

say "4. what the node's bridge saw"
total=$(tcpdump -r "$work/bridge.pcap" -nn 'ip or ip6' 2>/dev/null | wc -l)
tunnel=$(tcpdump -r "$work/bridge.pcap" -nn "udp port $PORT" 2>/dev/null | wc -l)
other=$(tcpdump -r "$work/bridge.pcap" -nn "(ip or ip6) and not udp port $PORT and not icmp6" 2>/dev/null | wc -l)
echo "  IP packets captured: $total, of them tenc UDP/$PORT: $tunnel, anything else between the pods: $other"
{ tcpdump -r "$work/bridge.pcap" -nn "udp port $PORT" 2>/dev/null || true; } | sed -n '1,3s/^/    /p'
if [ "$tunnel" -gt 0 ] && [ "$other" -eq 0 ]; then ok "the bridge carried only tenc's UDP datagrams (no ICMP, TCP or app UDP in the clear)"
else bad "unexpected packets on the bridge"; { tcpdump -r "$work/bridge.pcap" -nn "(ip or ip6) and not udp port $PORT and not icmp6" 2>/dev/null || true; } | sed -n 1,10p; fi
if grep -a -q "TENC-DEMO-SECRET" "$work/bridge.pcap"; then bad "the marker text appears in the capture"
else ok "the marker text never appears in the capture ($(stat -c %s "$work/bridge.pcap") bytes searched)"; fi

say "5. bulk TCP through the tunnel (after the capture, to keep it small)"
if in_ns "$NS_A" iperf3 -c "$B" -t 3 -J >"$work/iperf.json" 2>&1; then
  gbps=$(node -e "const j=require('$work/iperf.json'); console.log((j.end.sum_received.bits_per_second/1e9).toFixed(2))")
  ok "TCP (iperf3, 3 s, one stream) pod a -> pod b: $gbps Gbit/s through tenc"
else bad "iperf3 a -> b"; tail -5 "$work/iperf.json"; fi

say "6. tenc status in pod a (over its control socket)"
tenc_in "$NS_A" status | sed 's/^/    /'

say "7. teardown"
cleanup
trap - EXIT
if ip netns list | grep -q "^$PODS_PREFIX-"; then bad "namespaces left behind"; else ok "pods, tenc processes and namespaces removed"; fi
if [ $failed -ne 0 ]; then echo; echo "demo: some steps FAILED (see above)"; exit 1; fi
echo; echo "demo: all steps proved."
