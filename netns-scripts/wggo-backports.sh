#!/usr/bin/env bash
# Fetches wireguard-go 0.0.20231211 (TUN and UDP offloads) from Debian's bookworm-backports
# with a private apt state, without touching the machine's apt sources, and unpacks it into
# a private directory. Prints the path of the binary. Idempotent.
#
#   netns-scripts/wggo-backports.sh            -> /var/cache/tenc/wireguard-go-bpo/usr/bin/wireguard-go
set -euo pipefail

root=${TENC_CACHE:-/var/cache/tenc}/wireguard-go-bpo
bin=$root/usr/bin/wireguard-go
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/etc" "$state/dl"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main" \
  >"$state/etc/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$state/etc/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache" -o "APT::Sandbox::User=root")
apt-get "${apt_opts[@]}" -qq update >&2
(cd "$state/dl" && apt-get "${apt_opts[@]}" -qq download wireguard-go/bookworm-backports >&2)
deb=$(ls "$state"/dl/wireguard-go_*.deb)
mkdir -p "$root"
dpkg-deb -x "$deb" "$root"
"$bin" --version >&2
echo "$bin"
