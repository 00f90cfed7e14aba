#!/usr/bin/env bash
# Installs the Debian tools that tenc's tests, demo and benchmarks use, idempotently.
# dnsmasq-base (not dnsmasq): the binary without a system service listening on :53.
set -euo pipefail

need=(iperf3 wireguard-tools dnsmasq-base dnsperf tcpdump wireguard-go bind9-dnsutils iputils-ping nftables iproute2 curl procps psmisc openssl util-linux)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: missing Debian packages (${missing[*]}) and not root: run as root to install them" >&2
  exit 1
fi
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
log=$(mktemp)
apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; exit 1; }
rm -f "$log"
