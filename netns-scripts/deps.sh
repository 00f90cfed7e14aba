#!/usr/bin/env bash
# Installs the Debian tools that tenc's tests, demo and benchmarks use, idempotently.
# dnsmasq-base (not dnsmasq): the binary without a system service listening on :53.
# containernetworking-plugins: bridge, host-local, loopback (the local cluster's CNI chain);
# etcd-server, etcd-client: the etcd registry backend's cluster and etcdctl;
# prometheus: a real Prometheus (and promtool) scraping the metrics in the tests;
# clang-14, libfuzzer-14-dev, libclang-rt-14-dev, libssl-dev (static libcrypto): sanitizer
# builds and the fuzz harnesses; python3: the DNS proxy test's non-reading TCP clients.
# Packages that ship a service (etcd, prometheus) are installed with services kept
# from starting (policy-rc.d): the tests start their own, on their own addresses.
set -euo pipefail

need=(iperf3 wireguard-tools dnsmasq-base dnsperf tcpdump wireguard-go bind9-dnsutils iputils-ping nftables iproute2 curl procps psmisc openssl util-linux
  containernetworking-plugins etcd-server etcd-client prometheus clang-14 libfuzzer-14-dev libclang-rt-14-dev libssl-dev python3)
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
apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
log=$(mktemp)
# keep packaged services (etcd, prometheus) from starting: the tests run their own
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
fi
rc=0
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1 || rc=$?
[ "$made_policy" = 1 ] && rm -f "$policy"
if [ "$rc" -ne 0 ]; then cat "$log" >&2; rm -f "$log"; exit 1; fi
rm -f "$log"
